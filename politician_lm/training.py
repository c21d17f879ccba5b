"""``politician-lm fit|validate|test|predict``: the LightningCLI with the project's callbacks and run-folder rules.

Rules applied to the parsed config before any class is built (so before any model loads):

* ``trainer.default_root_dir`` defaults to ``runs/<data.politician>`` (``runs/default`` without one).
* ``fit`` into a folder that already holds a run (``adapters/`` or ``checkpoints/``) is refused unless it resumes
  (``--ckpt_path last|best|<file>``) or ``--overwrite true`` is given, which removes the old run's adapters and
  checkpoints first.
* ``--ckpt_path last`` is ``<root>/checkpoints/last.ckpt``; ``--ckpt_path best`` the ``step<N>.ckpt`` with the best
  recorded score. ``fit --ckpt_path last`` in a folder without a run starts at step 0 (a run killed before its
  first checkpoint).
* A recipe that asks for a GPU on a machine without CUDA stops with one line.

Python callers (``stages``, notebooks) describe a run as a typed ``FitConfig`` and call ``fit(config)``; the command
line and ``fit`` go through the same parser, so both get the same types, defaults, links and checks.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from argparse import ArgumentError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerStatus

from politician_lm.artifacts.adapter import check_adapter_politician
from politician_lm.artifacts.atomic import held_input
from politician_lm.callbacks.checkpoint import (
    BEST_DEFAULTS,
    CHECKPOINT_DIR,
    LAST,
    STEP_DEFAULTS,
    StepCheckpoint,
    check_resume_data,
    find_checkpoint,
)
from politician_lm.callbacks.export import AdapterExport
from politician_lm.callbacks.predictions import PredictionWriter
from politician_lm.data.datamodule import PoliticianDataModule
from politician_lm.errors import UserError
from politician_lm.hints import explain_parse_error
from politician_lm.model.module import PoliticianLM
from politician_lm.wandb_setup import wandb_loggers, wandb_offline


class PoliticianCLI(LightningCLI):
    """LightningCLI with the adapter export, a step checkpoint (``last.ckpt``) and a best checkpoint configured."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")
        parser.add_lightning_class_args(AdapterExport, "adapter_export")
        parser.add_lightning_class_args(StepCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_argument(
            "--wandb",
            type=bool,
            default=False,
            help="Also log to Weights & Biases (CSV stays on); offline unless WANDB_API_KEY is set.",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="fit: replace the run already in trainer.default_root_dir (its adapters/ and "
            "checkpoints/) instead of refusing.",
        )
        parser.set_defaults(
            {
                **{f"checkpoint.{k}": v for k, v in STEP_DEFAULTS.items()},
                **{f"best_checkpoint.{k}": v for k, v in BEST_DEFAULTS.items()},
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        with warnings.catch_warnings():  # stages and tests pass args while sys.argv holds the outer command
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as e:
                argv = list(sys.argv[1:] if args is None else args)
                raise UserError(explain_parse_error(str(e), argv, self._known_options(argv))) from None

    def _known_options(self, argv: list[str]) -> list[str]:
        parsers = getattr(self, "_subcommand_parsers", {})
        parser = parsers.get(argv[0]) if argv and argv[0] in parsers else next(iter(parsers.values()), None)
        if parser is None:
            return []
        return sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--")})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(config.trainer.accelerator, [str(c) for c in config.get("config") or []])
        check_model_folder(config.model.model_name_or_path)
        check_adapter_politician(config.model.get("init_adapter"), config.data.get("politician"))
        if not config.trainer.default_root_dir:
            config.trainer.default_root_dir = os.path.join("runs", config.data.get("politician") or "default")
            if self.subcommand:
                print(
                    f"trainer.default_root_dir not set: writing to {config.trainer.default_root_dir}", file=sys.stderr
                )
        root = config.trainer.default_root_dir
        if self.subcommand:
            config.ckpt_path = resolve_ckpt_path(self.subcommand, config, root)
            check_resume_data(config.ckpt_path if self.subcommand == "fit" else None, config.data)
        if config.trainer.logger is None or config.trainer.logger is True:
            # what Lightning would pick without TensorBoard, minus its warning about tensorboardX
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=root)
            )
        if config.get("wandb"):
            config.trainer.logger = wandb_loggers(root, config.trainer.logger)

    def before_fit(self) -> None:
        config = self.config["fit"]
        if config.get("overwrite") and config.get("ckpt_path") is None:
            for part in run_parts(config.trainer.default_root_dir, config.adapter_export.dirname):
                shutil.rmtree(part)
            (Path(config.trainer.default_root_dir) / "side_by_side.jsonl").unlink(missing_ok=True)  # the old run's
        wandb = [logger for logger in self.trainer.loggers if isinstance(logger, WandbLogger)]
        for logger, offline in zip(wandb, wandb_offline(config.trainer.logger)):  # both in the configured order
            if offline:
                print(
                    "W&B is offline (no WANDB_API_KEY, or WANDB_MODE=offline): "
                    f"the run is saved in {logger.experiment.dir}; "
                    f"upload it later with `wandb sync {Path(logger.experiment.dir).parent}`",
                    file=sys.stderr,
                )

    def _run_subcommand(self, subcommand: str) -> None:
        # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown; the CLI's exit is 130 with one line
        try:
            super()._run_subcommand(subcommand)
        except SystemExit as e:
            if e.code != 1 or self.trainer.state.status != TrainerStatus.INTERRUPTED:
                raise
            last, resume = Path(self.trainer.default_root_dir) / CHECKPOINT_DIR / LAST, ""
            if subcommand == "fit" and last.is_file():
                resume = f"; --ckpt_path last resumes from {last}"
            print(f"{subcommand} stopped at step {self.trainer.global_step}{resume}", file=sys.stderr)
            raise KeyboardInterrupt from None

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        # Checkpoints live in <default_root_dir>/checkpoints, not in a per-version log folder, so that
        # `fit --ckpt_path last` finds the previous run's last.ckpt.
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.join(trainer.default_root_dir, CHECKPOINT_DIR)
        return trainer


def run_parts(root: str | Path, adapters_dirname: str = "adapters") -> list[Path]:
    """The folders under ``root`` that show a run is there: non-empty ``adapters/`` and ``checkpoints/``."""
    parts = [Path(root) / adapters_dirname, Path(root) / CHECKPOINT_DIR]
    return [p for p in parts if p.is_dir() and any(p.iterdir())]


def resolve_ckpt_path(subcommand: str, config: Namespace, root: str) -> str | None:
    """Turn ``last``/``best`` into files and apply the rule that fit never silently replaces a run."""
    ckpt_path = config.get("ckpt_path")
    if Path(root).exists() and not Path(root).is_dir():
        raise UserError(f"{root}: is a file, and --trainer.default_root_dir names the run folder; choose another")
    used = run_parts(root, config.adapter_export.dirname)
    if ckpt_path in ("last", "best"):
        if subcommand == "fit" and ckpt_path == "last" and not used:
            print(f"{root}: no checkpoint to resume yet; training starts at step 0", file=sys.stderr)
            return None
        best = config.best_checkpoint
        return str(find_checkpoint(root, ckpt_path, best.monitor or "val_loss", best.mode))
    if ckpt_path is not None:
        if not Path(ckpt_path).exists() and not str(ckpt_path).startswith(("hpc", "registry")):
            raise UserError(f"{ckpt_path}: checkpoint not found; give a .ckpt file, or last or best")
        return ckpt_path
    if subcommand == "fit" and used and config.get("overwrite"):  # they are removed: never the fit's own inputs
        given = (config.model.get("init_adapter"), config.data.get("data_path"), config.data.get("anchor_path"))
        inputs = [v for g in given for v in (g if isinstance(g, list) else [g])]
        if (value := next((v for p in used if (v := held_input(p, inputs)) is not None), None)) is not None:
            raise UserError(f"{value}: --overwrite true would delete this input, which the run folder {root} "
                            "holds; copy it out first or choose another --trainer.default_root_dir")  # fmt: skip
    if subcommand == "fit" and used and not config.get("overwrite"):
        names = " and ".join(f"{p.name}/" for p in used)
        raise UserError(
            f"{root} already holds a run ({names}); resume it with --ckpt_path last, choose another "
            "--trainer.default_root_dir, or pass --overwrite true to replace it"
        )
    return None


def check_accelerator(accelerator: Any, configs: list[str]) -> None:
    """A GPU recipe on a machine without CUDA: one line pointing at the CPU recipes."""
    if not isinstance(accelerator, str) or accelerator.lower() not in ("gpu", "cuda"):
        return
    import torch

    if torch.cuda.is_available():
        return
    source = configs[-1] if configs else "the config"
    cpu = ["configs/demo.yaml", *sorted(str(p) for p in Path("configs").glob("smollm2*.yaml"))]
    raise UserError(
        f"{source}: this recipe needs a CUDA GPU (trainer.accelerator: {accelerator}) and none is "
        f"available; on a CPU use --config {' or '.join(cpu)}"
    )


def check_model_folder(name: str) -> None:
    """A base model named by a local path must exist (a missing one would otherwise be looked up on the hub)."""
    path = Path(name).expanduser()
    local = path.is_absolute() or name.startswith(".") or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())
    if local and not path.exists():
        hint = (
            "create it with `politician-lm import-model`"
            if path.parent.name == "checkpoints"
            else "point model.model_name_or_path at a model folder or a hub id"
        )
        raise UserError(f"{name}: model folder not found; {hint}")


@dataclass
class FitConfig:
    """One ``fit`` as data: config files applied in order, then dotted-key overrides (``{"trainer.max_steps": 10}``).

    Values keep their Python types; the LightningCLI parser checks each against the signature it belongs to, exactly
    as it checks ``politician-lm fit --config A --trainer.max_steps 10``.
    """

    configs: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    ckpt_path: str | None = None
    overwrite: bool = False

    def arguments(self) -> list[str]:
        """The equivalent ``politician-lm fit`` arguments (strings as written, every other value as JSON)."""
        args = [a for c in self.configs for a in ("--config", str(c))]
        args += [
            f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in self.overrides.items()
        ]
        if self.ckpt_path is not None:
            args.append(f"--ckpt_path={self.ckpt_path}")
        if self.overwrite:
            args.append("--overwrite=true")
        return args


@dataclass
class FitResult:
    """What a finished fit left: its run folder and the last value of every scalar it logged."""

    root_dir: Path
    metrics: dict[str, float]


def check(config: FitConfig) -> PoliticianCLI:
    """Parse ``config`` and build the model, data and trainer objects without training: a typo fails here, in
    seconds, not after the runs before it. The base model's weights load only at ``fit``."""
    return run_trainer_cli(config.arguments(), run=False)


def fit(config: FitConfig) -> FitResult:
    """Train as ``politician-lm fit`` would with the same settings, under this project's run-folder rules."""
    cli = run_trainer_cli(["fit", *config.arguments()])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}
    return FitResult(root_dir=Path(cli.trainer.default_root_dir), metrics=metrics)


def run_trainer_cli(args: list[str] | None = None, run: bool = True) -> PoliticianCLI:
    """Build the CLI; with ``run=False`` it parses and instantiates model, data and trainer without a subcommand."""
    from politician_lm.quiet import quiet_training

    quiet_training()
    return PoliticianCLI(
        PoliticianLM,
        PoliticianDataModule,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "description": "Fine-tune a causal LM to speak like a politician (QLoRA + Lightning).",
            "prog": "politician-lm",
            "exit_on_error": False,
        },
        auto_configure_optimizers=False,  # the optimizer and schedule live under `model:`
        args=args,
        run=run,
    )
