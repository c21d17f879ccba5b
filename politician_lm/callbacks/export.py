"""``AdapterExport``: write PEFT adapters to ``<default_root_dir>/adapters/{last,best}`` atomically.

Each folder holds ``adapter_config.json`` + ``adapter_model.safetensors`` (plain PEFT format), the tokenizer,
``politician_lm.json`` (the prompt format generation must rebuild) and ``training_config.yaml`` (the resolved
model and data settings). A folder is written under a temporary name and renamed into place, so a crash
mid-write never leaves a half-written adapter where ``best`` or ``last`` was.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_warn

from politician_lm.artifacts.atomic import atomic_dir
from politician_lm.callbacks.contracts import ExportData, ExportModule, require

log = logging.getLogger(__name__)

METADATA_FILE = "politician_lm.json"
CONFIG_FILE = "training_config.yaml"


def _plain(value: Any) -> Any:
    """hparams as YAML-safe builtins."""
    return json.loads(json.dumps(dict(value), default=str))


def base_model_reference(name: str | None) -> dict[str, str | None]:
    """The base model as given (``base_model``) and, for a local folder, its absolute path (``base_model_path``),
    so the adapter finds its base from any working directory (see ``adapters.files.AdapterFolder.base_model``)."""
    ref: dict[str, str | None] = {"base_model": name}
    if name and Path(name).is_dir():
        ref["base_model_path"] = str(Path(name).resolve())
    return ref


def best_step(folder: Path) -> int | None:
    """The training step of the weights in an exported adapter ``folder`` (its ``politician_lm.json``)."""
    return json.loads((folder / METADATA_FILE).read_text(encoding="utf-8")).get("global_step")


class AdapterExport(L.Callback):
    """Export the LoRA adapter at the end of fit (``last``) and whenever the monitored metric improves (``best``)."""

    def __init__(
        self,
        dirname: str = "adapters",
        monitor: str = "val_loss",
        mode: Literal["min", "max"] = "min",
        save_best: bool = True,
        save_last: bool = True,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
    ) -> None:
        """
        Args:
            dirname: Folder under ``trainer.default_root_dir`` that receives ``best/`` and ``last/``.
            monitor: Logged metric that decides ``best``.
            mode: Whether a lower (``min``) or higher (``max``) ``monitor`` is better.
            save_best: Export ``best`` on improvement.
            save_last: Export ``last`` at the end of fit.
            max_new_tokens: Answer length saved in the adapter's generation_config.json (generate/chat default).
            temperature: Sampling temperature saved in the adapter's generation_config.json.
            top_p: Nucleus sampling mass saved in the adapter's generation_config.json.
        """
        self.dirname, self.monitor, self.mode = dirname, monitor, mode
        self.save_best, self.save_last = save_best, save_last
        self.sampling = {
            "do_sample": True,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        self.best_score: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # only fit writes adapters
            require(pl_module, ExportModule, type(self).__name__, "LightningModule")
            require(trainer.datamodule, ExportData, type(self).__name__, "DataModule")

    def root(self, trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.dirname

    def _improved(self, score: float) -> bool:
        if not math.isfinite(score):
            return False
        if self.best_score is None:
            return True
        return score < self.best_score if self.mode == "min" else score > self.best_score

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> Path:
        """Write the adapter folder ``name`` atomically (rank 0 only) and return its path; the module and the
        DataModule are those ``setup`` checked (``ExportModule``, ``ExportData``)."""
        target = self.root(trainer) / name
        if not trainer.is_global_zero:
            return target
        bad = [n for n, p in pl_module.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        if bad:  # never replace a good export with a broken state
            rank_zero_warn(
                f"adapter not exported to {target}: {len(bad)} trainable tensors hold NaN/Inf (e.g. {bad[0]})"
            )
            return target
        with atomic_dir(target) as tmp:
            pl_module.model.save_pretrained(tmp, safe_serialization=True)
            dm: ExportData = trainer.datamodule
            tokenizer = dm.tokenizer
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            generation = copy.deepcopy(pl_module.model.generation_config)
            generation.update(**self.sampling, pad_token_id=getattr(tokenizer, "pad_token_id", None))
            generation.save_pretrained(tmp)
            meta = {
                **dm.prompt_metadata(),
                **base_model_reference(pl_module.model_name_or_path),
                "quantization": pl_module.quantization,
                "global_step": trainer.global_step,
                # the epoch (from 0) of the weights' last step, for best and last alike: after fit ends Lightning's
                # current_epoch already counts the finished epoch
                "epoch": max(trainer.fit_loop.epoch_progress.current.started - 1, 0),
                "monitor": self.monitor,
                "best_score": self.best_score,
            }
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            config = {"model": _plain(pl_module.hparams), "data": _plain(trainer.datamodule.hparams)}
            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        log.info("adapter written to %s (step %d)", target, trainer.global_step)
        return target

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # only fit writes adapters: `validate --ckpt_path X` must not replace `best` with X's weights
        if (
            not self.save_best
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
            or self.monitor not in trainer.callback_metrics
        ):
            return
        score = float(trainer.callback_metrics[self.monitor])
        if self._improved(score):
            self.best_score = score
            self.export(trainer, pl_module, "best")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and trainer.state.fn == "fit":
            self.export(trainer, pl_module, "last")
        if self.save_best and trainer.state.fn == "fit" and self.best_score is None:
            log.warning(
                "no validation logged %s before fit ended (trainer.max_steps %s came first?), so there is no %s/best: "
                "use %s/last, or validate more often (--trainer.val_check_interval <steps>)",
                self.monitor,
                trainer.max_steps,
                self.dirname,
                self.dirname,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
