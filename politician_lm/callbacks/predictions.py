"""``PredictionWriter``: save what ``politician-lm predict`` generated as JSONL next to the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import BasePredictionWriter

from politician_lm.artifacts.jsonl import write_jsonl


class PredictionWriter(BasePredictionWriter):
    """Write every ``{"prompt", "generation"}`` record of a predict run to ``<default_root_dir>/<filename>``."""

    def __init__(self, filename: str = "predictions.jsonl") -> None:
        """
        Args:
            filename: Output file, relative to ``trainer.default_root_dir``.
        """
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        if not trainer.is_global_zero:
            return
        rows = [row for batch in predictions for row in batch]
        path = write_jsonl(Path(trainer.default_root_dir) / self.filename, rows)
        print(f"wrote {len(rows)} generations to {path}")
