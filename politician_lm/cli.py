"""``politician-lm``: the LightningCLI for fit/validate/test/predict, plus room for the other verbs.

Trainer verbs go to Lightning's CLI, so ``--help``, ``--print_config`` and repeated ``--config`` behave as
Lightning users expect. Other verbs (merge, export, generate, chat, prepare, evaluate, stages) are typed
functions registered in ``COMMANDS`` and parsed by jsonargparse from their signatures and docstrings.
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from politician_lm.adapters.export import export
from politician_lm.adapters.merge import merge
from politician_lm.callbacks.export import AdapterExport
from politician_lm.callbacks.predictions import PredictionWriter
from politician_lm.data.datamodule import PoliticianDataModule
from politician_lm.data.prepare import prepare
from politician_lm.errors import UserError
from politician_lm.evaluate import evaluate
from politician_lm.inference import chat, generate
from politician_lm.model.gguf import import_model
from politician_lm.model.module import PoliticianLM
from politician_lm.stages import stages

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
# Non-trainer verbs: name -> typed function; jsonargparse builds each parser from the signature and docstring.
COMMANDS: dict[str, Callable[..., Any]] = {"merge": merge, "export": export, "generate": generate, "chat": chat,
                                           "evaluate": evaluate, "stages": stages, "prepare": prepare,
                                           "import-model": import_model}


class PoliticianCLI(LightningCLI):
    """LightningCLI with the adapter export and a resumable checkpoint always configured."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer")
        parser.add_lightning_class_args(AdapterExport, "adapter_export")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_argument("--wandb", type=bool, default=False,
                            help="Also log to Weights & Biases (CSV stays on); offline unless WANDB_API_KEY is set.")
        parser.set_defaults({
            "checkpoint.monitor": "val_loss",
            "checkpoint.mode": "min",
            "checkpoint.save_top_k": 1,
            "checkpoint.save_last": True,
            "checkpoint.filename": "step{step}",
            "checkpoint.every_n_train_steps": 50,  # a preempted run loses at most this many steps
            "checkpoint.auto_insert_metric_name": False,
        })

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("wandb"):
            config.trainer.logger = wandb_loggers(config.trainer.default_root_dir or ".", config.trainer.logger)

    def before_fit(self) -> None:
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._offline:
                print(f"W&B is offline (no WANDB_API_KEY, or WANDB_MODE=offline): the run is saved in {logger.experiment.dir}; "
                      f"upload it later with `wandb sync {Path(logger.experiment.dir).parent}`", file=sys.stderr)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        # Checkpoints live in <default_root_dir>/checkpoints, not in a per-version log folder, so that
        # `fit --ckpt_path last` finds the previous run's last.ckpt.
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        return trainer


def wandb_loggers(root: str, current: Any) -> list[Namespace]:
    """CSV (kept, unless another logger is configured) plus W&B; offline without an API key or with WANDB_MODE=offline."""
    offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
    wandb = Namespace(class_path="lightning.pytorch.loggers.WandbLogger",
                      init_args=Namespace(save_dir=root, project="politician-lm", offline=offline))
    keep = current if isinstance(current, list) else [current] if isinstance(current, Namespace) else []
    if not keep:
        keep = [Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=root))]
    return [*keep, wandb]


def run_trainer_cli(args: list[str] | None = None, run: bool = True) -> PoliticianCLI:
    """Build the CLI; with ``run=False`` it parses and instantiates model, data and trainer without a subcommand."""
    return PoliticianCLI(
        PoliticianLM,
        PoliticianDataModule,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "Fine-tune a causal LM to speak like a politician (QLoRA + Lightning).",
                       "exit_on_error": False},
        auto_configure_optimizers=False,  # the optimizer and schedule live under `model:`
        args=args,
        run=run,
    )


def check_config_files(args: list[str]) -> None:
    """Every ``--config`` file exists and is a YAML mapping; errors name the file (jsonargparse's do not)."""
    for name in _config_names(args):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path}: config is not UTF-8 text") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})") from None
        if content is not None and not isinstance(content, dict):
            raise UserError(f"{path}: a config must be a mapping of keys to values")


def overview() -> str:
    lines = ["usage: politician-lm COMMAND [options]   (politician-lm COMMAND --help for its options)", "",
             "training (LightningCLI; --config, --print_config, dotted overrides):"]
    lines += [f"  {name:<10} {doc}" for name, doc in (
        ("fit", "fine-tune an adapter: politician-lm fit --config configs/demo.yaml"),
        ("validate", "validation loss of a checkpoint (--ckpt_path)"),
        ("test", "test loss of a checkpoint (--ckpt_path)"),
        ("predict", "greedy generations for the validation prompts -> predictions.jsonl"))]
    lines += ["", "adapters and inference:"]
    lines += [f"  {name:<10} {(fn.__doc__ or '').strip().splitlines()[0]}" for name, fn in COMMANDS.items()]
    return "\n".join(lines)


def _underscored(arg: str) -> str:
    """Accept the old script's ``--output-dir`` spelling for ``--output_dir``."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def _config_names(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")] + \
        [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(overview())
        return
    try:
        check_config_files(args)
        if args and args[0] in COMMANDS:
            from jsonargparse import auto_cli

            auto_cli(COMMANDS[args[0]], args=[_underscored(a) for a in args[1:]], as_positional=False,
                     exit_on_error=False, prog=f"politician-lm {args[0]}")
        else:
            run_trainer_cli(argv)  # None: LightningCLI reads sys.argv itself
    except (UserError, ArgumentError) as e:
        message = " ".join(str(e).split())  # one line, whatever the parser wrapped
        if isinstance(e, ArgumentError) and (configs := _config_names(args)):
            message = f"{message} (config: {', '.join(configs)})"
        print(f"politician-lm: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
