"""Checkpoints a run can be resumed from at any moment, named after the weights they hold.

Two Lightning ``ModelCheckpoint`` callbacks, both in ``<default_root_dir>/checkpoints``:

* ``StepCheckpoint`` (config key ``checkpoint``): ``last.ckpt`` every ``every_n_train_steps`` steps and at the end
  of fit. It monitors nothing, so Lightning never defers it until a validation metric exists: a run killed before
  its first validation resumes too.
* the best checkpoint (config key ``best_checkpoint``): ``step<N>.ckpt``, saved only at the end of a validation, so
  ``N`` is the step of the weights whose ``val_loss`` it records.

``find_checkpoint`` turns ``last`` and ``best`` into files for ``--ckpt_path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from politician_lm.errors import UserError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` training steps and at the end of fit (monitors nothing)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning saves last.ckpt here only if it never saved one; a fit of 38 steps with every_n_train_steps 5
        # would then end with last.ckpt at step 35. The final step is saved instead.
        if not self.save_last or trainer.fast_dev_run or trainer.state.fn != "fit" or self.dirpath is None:
            return
        path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        self.last_model_path = path
        trainer.save_checkpoint(path, self.save_weights_only)


STEP_DEFAULTS: dict[str, Any] = {
    "monitor": None,
    "save_top_k": 0,  # no numbered copies: only last.ckpt
    "save_last": True,
    "every_n_train_steps": 50,  # a killed run loses at most this many steps
    "enable_version_counter": False,  # overwrite last.ckpt, never last-v1.ckpt
}

BEST_DEFAULTS: dict[str, Any] = {
    "monitor": "val_loss",
    "mode": "min",
    "save_top_k": 1,
    "save_last": False,
    "filename": "step{step}",
    "auto_insert_metric_name": False,
    "save_on_train_epoch_end": False,  # saved when a validation ends, with that validation's score
    "enable_version_counter": False,
}


def _score(path: Path, monitor: str) -> float | None:
    """The monitored score recorded in a best checkpoint (the ModelCheckpoint state that saved it)."""
    state = torch.load(path, map_location="cpu", weights_only=False).get("callbacks", {})
    for key, value in state.items():
        if key.startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("monitor") == monitor:
            score = value.get("current_score")
            return float(score) if score is not None else None
    return None


def find_checkpoint(root: str | Path, which: str, monitor: str = "val_loss", mode: str = "min") -> Path:
    """``last`` -> ``<root>/checkpoints/last.ckpt``; ``best`` -> the ``step<N>.ckpt`` with the best recorded score."""
    folder = Path(root) / CHECKPOINT_DIR
    if which == "last":
        path = folder / LAST
        if not path.is_file():
            raise UserError(f"{folder}: no {LAST} to use for --ckpt_path last")
        return path
    candidates = (
        sorted(folder.glob("step*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)) if folder.is_dir() else []
    )
    if not candidates:
        raise UserError(
            f"{folder}: no best checkpoint (step<N>.ckpt is written when a validation ends); "
            "use --ckpt_path last or a checkpoint file"
        )
    if len(candidates) == 1:
        return candidates[0]
    scored = [(s, p) for p in candidates if (s := _score(p, monitor)) is not None]
    if not scored:
        return candidates[-1]
    return (min if mode == "min" else max)(scored, key=lambda sp: sp[0])[1]


def check_resume_data(ckpt_path: str | None, data: Any) -> None:
    """A one-line UserError when ``fit`` resumes ``ckpt_path`` with other data or another politician than the run
    was trained with (``data``: the config's data section): the run would go on on other records, and its best
    adapter's score would be compared across two validation sets."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return
    saved = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=False).get("datamodule_hyper_parameters")
    for key in ("data_path", "politician") if saved else ():
        was, now = saved.get(key), data.get(key)
        same = was == now or (key == "data_path" and bool(was and now) and Path(was).resolve() == Path(now).resolve())
        if not same:
            raise UserError(
                f"{ckpt_path}: the run was trained with data.{key} {was!r}, not {now!r}; resume with the same "
                "data, or start another run (another --trainer.default_root_dir, or --overwrite true)"
            )
