"""W&B beside the CSV logger: ``trainer.logger`` entries for ``--wandb true``, offline without an API key."""

from __future__ import annotations

import os
from typing import Any

from jsonargparse import Namespace


def wandb_loggers(root: str, current: Any) -> list[Namespace]:
    """CSV (kept, unless another logger is configured) plus W&B; offline without an API key or with
    WANDB_MODE=offline."""
    offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
    wandb = Namespace(
        class_path="lightning.pytorch.loggers.WandbLogger",
        init_args=Namespace(save_dir=root, project="politician-lm", offline=offline),
    )
    keep = current if isinstance(current, list) else [current] if isinstance(current, Namespace) else []
    if not keep:
        keep = [Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=root))]
    return [*keep, wandb]


def wandb_offline(loggers: Any) -> list[bool]:
    """For each W&B logger in a parsed ``trainer.logger`` (as ``wandb_loggers`` or a config built it), in order:
    whether it was configured offline."""
    entries = loggers if isinstance(loggers, list) else [loggers]
    return [
        bool((entry.get("init_args") or {}).get("offline"))
        for entry in entries
        if isinstance(entry, Namespace) and str(entry.get("class_path", "")).endswith(".WandbLogger")
    ]
