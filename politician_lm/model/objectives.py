"""What a training objective decides, as one small object ``PoliticianLM`` chooses once from ``model.objective``:
the loss of a batch and what it logs, which data it trains on, what it adds to a checkpoint, and any pass it needs
before the first step. ``SFT`` is here; ``DPO`` (preference pairs against a cached reference) is in ``model.dpo``.

Every method has a do-nothing default except ``step``, so an objective states only where it differs.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, NamedTuple

import torch

from politician_lm.batch import PreferenceSource
from politician_lm.errors import UserError
from politician_lm.model.scoring import Scorer

# The checkpoint key a DPO run keeps its reference log-probabilities under (part of the checkpoint format); an SFT
# run refuses a checkpoint that has it.
REFERENCE_KEY = "politician_lm_dpo_reference"
# The checkpoint key a SimPO run marks its checkpoints with (it has no reference to carry); other objectives refuse it.
SIMPO_KEY = "politician_lm_simpo"


def token_fingerprint(datasets: list[Any], columns: tuple[str, ...]) -> str:
    """A hash of the token ids of every row's ``columns``, in order: the data a stored score belongs to."""
    digest = hashlib.sha256()
    for ds in datasets:
        for column in columns:
            for ids in ds[column]:
                digest.update(len(ids).to_bytes(4, "little"))
                digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


class StepResult(NamedTuple):
    """One batch's loss, its size for Lightning's averaging, and extra metrics logged as ``<split>_<name>``."""

    loss: torch.Tensor  # 0-d
    size: int  # examples: rows for SFT, pairs for DPO
    metrics: dict[str, torch.Tensor]  # logged only when the loss is finite


class TrainingObjective:
    """The strategy interface; see the module docstring."""

    def check_data(self, source: PreferenceSource | None) -> None:
        """Refuse data this objective cannot train on (run after the data is read, before the model loads);
        ``source`` is None when the DataModule is not a ``PreferenceSource``."""

    def prepare(self, source: PreferenceSource | None, scorer: Scorer, device: torch.device) -> None:
        """Run before fit, validate and test: any pass over the data the steps need."""

    def step(self, scorer: Scorer, batch: dict[str, torch.Tensor], split: str, device: torch.device) -> StepResult:
        """The loss of ``batch``; ``split`` is ``train``, ``val`` or ``test``."""
        raise NotImplementedError

    def validation_metrics(self, loss: float, at_start: bool) -> dict[str, float]:
        """What a validation pass logs besides ``val_loss``, from its example-weighted mean loss; ``at_start`` for the
        sanity check before training (logged with ``_at_start`` names, at step 0)."""
        return {}

    def on_train_batch_start(self) -> None:
        """A training batch is about to change the weights."""

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Add this objective's state to ``checkpoint``."""

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Read back what ``save`` wrote; refuse a checkpoint of another objective in one line."""


class SFT(TrainingObjective):
    """Completion-only cross-entropy on prompt/completion rows (or packed rows of them)."""

    def check_data(self, source: PreferenceSource | None) -> None:
        if source is not None and source.preference:
            raise UserError(f"{source.data_path}: holds preference pairs; train them with --model.objective dpo")

    def step(self, scorer: Scorer, batch: dict[str, torch.Tensor], split: str, device: torch.device) -> StepResult:
        return StepResult(scorer.token_loss(batch), batch["input_ids"].shape[0], {})

    def validation_metrics(self, loss: float, at_start: bool) -> dict[str, float]:
        # a mean per-token NLL, so exp(loss) is the perplexity (a DPO loss is not, and logs none)
        if at_start:
            return {"val_perplexity_at_start": math.exp(loss)}
        return {"val_perplexity": math.exp(min(loss, 50.0))}

    def load(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get(REFERENCE_KEY) is not None:
            raise UserError("the checkpoint is from a DPO run; resume it with --model.objective dpo")
        if checkpoint.get(SIMPO_KEY):
            raise UserError("the checkpoint is from a SimPO run; resume it with --model.objective simpo")
