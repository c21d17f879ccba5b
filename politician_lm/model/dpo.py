"""The preference objectives: DPO (``model.objective: dpo``) with its reference, the policy at the start of the
stage (the base plus ``init_adapter``) scored once, and reference-free SimPO (``model.objective: simpo``).

Before the first step one no-grad pass stores the chosen and rejected log-probabilities of every train and val pair
(``ReferenceCache``), and checkpoints carry them. No second copy of the model is loaded or run, and a resumed run
keeps the reference of the run it resumes. The losses themselves are ``model.preference.dpo_loss`` and
``simpo_loss``; ``objective_for`` picks the strategy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from politician_lm.batch import IGNORE_INDEX, PreferenceSource
from politician_lm.errors import UserError
from politician_lm.model.anchor import Anchor, AnchorKind
from politician_lm.model.objectives import (
    REFERENCE_KEY,
    SFT,
    SIMPO_KEY,
    StepResult,
    TrainingObjective,
    token_fingerprint,
)
from politician_lm.model.preference import PreferenceOutput, dpo_loss, simpo_loss
from politician_lm.model.scoring import Scorer

NEEDS_PAIRS = "model.objective {} needs the PoliticianDataModule (data:) with preference pairs"
OBJECTIVES = ("sft", "dpo", "simpo")


def pairs_fingerprint(datasets: list[Any]) -> str:
    """A hash of the token ids of every pair, in order: the data a DPO reference belongs to."""
    return token_fingerprint(datasets, ("input_ids", "rejected_input_ids"))


@dataclass
class ReferenceCache:
    """The reference log-probabilities of every pair, the data they belong to, and whether they still equal the
    policy's (no step since they were computed)."""

    logps: dict[str, torch.Tensor] = field(default_factory=dict)  # per split, [pairs, 2] (chosen, rejected) by "index"
    data: str | None = None  # fingerprint of the pairs the reference was computed on
    is_policy: bool = False  # True from the reference pass until the first training step

    def ensure(self, source: PreferenceSource, scorer: Scorer, device: torch.device) -> None:
        """Score every pair once with the current (starting) weights, unless a checkpoint brought the reference."""
        loaders = source.reference_dataloaders()
        fingerprint = pairs_fingerprint([loader.dataset for loader in loaders.values()])
        if self.logps:
            if self.data != fingerprint:
                raise UserError(
                    "the pairs differ from those the run started on (its reference log-probabilities "
                    "were computed on other data); resume with the same data, or start a new run"
                )
            return
        counts = ", ".join(f"{len(loader.dataset)} {split}" for split, loader in loaders.items())
        rank_zero_info(f"DPO reference: scoring {counts} pairs with the starting weights (one pass, no gradients)")
        self.logps = {split: self.score(scorer, loader, device) for split, loader in loaders.items()}
        self.data = fingerprint
        self.is_policy = True

    @staticmethod
    def score(scorer: Scorer, loader: Any, device: torch.device) -> torch.Tensor:
        """``[pairs, 2]`` float64 log-probabilities (chosen, rejected) of every pair ``loader`` yields."""

        def chosen_and_rejected(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logps, n = scorer.pair_logps(batch)[0], batch["index"].shape[0]
            return torch.stack([logps[:n], logps[n:]], dim=1)

        return scorer.by_index(loader, device, chosen_and_rejected)

    def save(self, checkpoint: dict[str, Any]) -> None:
        if self.logps:
            checkpoint[REFERENCE_KEY] = {"logps": self.logps, "data": self.data}

    def load(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(REFERENCE_KEY)
        if saved is None:
            raise UserError(
                "the checkpoint is not from a DPO run (it has no reference log-probabilities); start "
                "a DPO stage from an SFT adapter with --model.init_adapter, not from an SFT checkpoint"
            )
        self.logps, self.data = dict(saved["logps"]), saved["data"]


class PairObjective(TrainingObjective):
    """What DPO and SimPO share: preference pairs scored after one copy of the prompt, ``beta`` and ``sft_weight``,
    and a step that is the pairs' ``preference`` loss with its rewards logged."""

    name = ""

    def __init__(self, beta: float, sft_weight: float, attn_implementation: str | None) -> None:
        self.beta, self.sft_weight, self.attn_implementation = beta, sft_weight, attn_implementation
        self.anchor = Anchor()  # data.anchor_path's records, where the DataModule has them

    def check_data(self, source: PreferenceSource | None) -> None:
        if source is None:
            raise UserError(NEEDS_PAIRS.format(self.name))
        if "flash" in str(self.attn_implementation or ""):
            raise UserError(
                f"model.objective {self.name} scores both answers after one copy of the prompt with a 4D attention "
                f"mask, which {self.attn_implementation} cannot take; set model.attn_implementation: sdpa"
            )
        if not source.preference:
            raise UserError(
                f"{source.data_path}: model.objective {self.name} needs preference pairs "
                "({'prompt', 'chosen', 'rejected'}); build them with `politician-lm pairs`"
            )

    def prepare(self, source: PreferenceSource | None, scorer: Scorer, device: torch.device) -> None:
        if source is None:
            raise UserError(NEEDS_PAIRS.format(self.name))
        self.anchor.ensure(source, scorer, device)

    def preference(
        self, scorer: Scorer, batch: dict[str, torch.Tensor], split: str, device: torch.device
    ) -> PreferenceOutput:
        """The loss of a batch of n pairs (one row each); ``split`` is ``train`` or ``val``."""
        raise NotImplementedError

    def step(self, scorer: Scorer, batch: dict[str, Any], split: str, device: torch.device) -> StepResult:
        """The pairs' loss; a training batch with anchor records (``data.anchor_path``: ``{"pairs", "anchor"}``)
        adds their penalty (``model.anchor``)."""
        anchor = batch["anchor"] if "pairs" in batch else None
        pairs = batch["pairs"] if anchor is not None else batch
        out = self.preference(scorer, pairs, "train" if split == "train" else "val", device)
        loss, metrics = out.loss, out.metrics()
        if anchor is not None:
            penalty, logged = self.anchor.penalty(scorer, anchor)
            loss, metrics = loss + penalty, {**metrics, **logged}
        return StepResult(loss, pairs["index"].shape[0], metrics)

    def save(self, checkpoint: dict[str, Any]) -> None:
        self.anchor.save(checkpoint)

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.anchor.load(checkpoint)


class DPO(PairObjective):
    """Sigmoid DPO on preference pairs, plus ``sft_weight`` x the chosen answers' NLL (RPO); logs the rewards."""

    name = "dpo"

    def __init__(self, beta: float, sft_weight: float, attn_implementation: str | None) -> None:
        super().__init__(beta, sft_weight, attn_implementation)
        self.reference = ReferenceCache()

    def prepare(self, source: PreferenceSource | None, scorer: Scorer, device: torch.device) -> None:
        super().prepare(source, scorer, device)
        self.reference.ensure(source, scorer, device)

    def preference(
        self, scorer: Scorer, batch: dict[str, torch.Tensor], split: str, device: torch.device
    ) -> PreferenceOutput:
        """DPO on a batch of n pairs (one row each): log-probabilities [0, n) are the chosen answers', [n, 2n) the
        rejected ones'; ``split`` (``train`` or ``val``) picks the reference."""
        n = batch["index"].shape[0]
        reference = self.reference.logps[split][batch["index"].cpu()]
        if self.reference.is_policy and not torch.is_grad_enabled():
            # no step since the reference pass: the policy's log-probabilities are the reference's (same loader,
            # same batches), so the validation before training reads them instead of scoring the pairs again
            counts = torch.cat([(batch[k] != IGNORE_INDEX).sum(1) for k in ("chosen_targets", "rejected_targets")])
            logps = torch.cat([reference[:, 0], reference[:, 1]]).float()
            logps, counts = logps.to(device), counts.to(device)
        else:
            logps, counts = scorer.pair_logps(batch)
        reference = reference.to(logps.device)
        return dpo_loss(logps[:n], logps[n:], reference[:, 0], reference[:, 1], counts[:n], self.beta, self.sft_weight)

    def on_train_batch_start(self) -> None:
        self.reference.is_policy = False

    def save(self, checkpoint: dict[str, Any]) -> None:
        super().save(checkpoint)
        self.reference.save(checkpoint)

    def load(self, checkpoint: dict[str, Any]) -> None:
        super().load(checkpoint)
        self.reference.load(checkpoint)


class SimPO(PairObjective):
    """Reference-free SimPO on preference pairs (``simpo_loss``), plus ``sft_weight`` x the chosen answers' NLL: no
    reference pass; checkpoints carry only a mark of the objective. ``gamma`` is the target reward margin."""

    name = "simpo"

    def __init__(self, beta: float, gamma: float, sft_weight: float, attn_implementation: str | None) -> None:
        super().__init__(beta, sft_weight, attn_implementation)
        self.gamma = gamma

    def preference(
        self, scorer: Scorer, batch: dict[str, torch.Tensor], split: str, device: torch.device
    ) -> PreferenceOutput:
        """SimPO on a batch of n pairs: log-probabilities [0, n) are the chosen answers', [n, 2n) the rejected."""
        n = batch["index"].shape[0]
        logps, counts = scorer.pair_logps(batch)
        return simpo_loss(logps[:n], logps[n:], counts[:n], counts[n:], self.beta, self.gamma, self.sft_weight)

    def save(self, checkpoint: dict[str, Any]) -> None:
        super().save(checkpoint)
        checkpoint[SIMPO_KEY] = True  # no reference to carry: a mark, so other objectives refuse the checkpoint

    def load(self, checkpoint: dict[str, Any]) -> None:
        super().load(checkpoint)
        if checkpoint.get(REFERENCE_KEY) is not None:
            raise UserError("the checkpoint is from a DPO run; resume it with --model.objective dpo")
        if not checkpoint.get(SIMPO_KEY):
            raise UserError(
                "the checkpoint is not from a SimPO run; start a SimPO stage from an SFT adapter with "
                "--model.init_adapter, not from an SFT checkpoint"
            )


def objective_for(
    objective: str,
    beta: float,
    gamma: float,
    sft_weight: float,
    attn_implementation: str | None,
    anchor_weight: float = 1.0,
    anchor_kind: AnchorKind = "hinge",
) -> TrainingObjective:
    """The strategy ``model.objective`` names, its options checked in one line each."""
    if objective not in OBJECTIVES:
        raise UserError(f"unknown model.objective {objective!r}; use {', '.join(map(repr, OBJECTIVES))}")
    if beta <= 0 or not math.isfinite(beta) or sft_weight < 0 or not math.isfinite(sft_weight):
        raise UserError(f"model.beta must be > 0 and model.sft_weight >= 0, got {beta} and {sft_weight}")
    if not math.isfinite(gamma):
        raise UserError(f"model.gamma must be a finite number, got {gamma}")
    if anchor_weight < 0 or not math.isfinite(anchor_weight):
        raise UserError(f"model.anchor_weight must be a finite number >= 0, got {anchor_weight}")
    if anchor_kind not in ("hinge", "kl"):
        raise UserError(f"unknown model.anchor_kind {anchor_kind!r}; use 'hinge' or 'kl'")
    if objective == "sft":
        return SFT()
    pair: PairObjective = (
        DPO(beta, sft_weight, attn_implementation)
        if objective == "dpo"
        else SimPO(beta, gamma, sft_weight, attn_implementation)
    )
    pair.anchor.weight, pair.anchor.kind = anchor_weight, anchor_kind
    return pair


class DPOHandles:
    """``PoliticianLM``'s handles on the DPO internals, which tests/model/test_preference.py drives directly; valid
    when ``model.objective`` is ``dpo``."""

    objective: Any  # a DPO
    scorer: Scorer
    device: torch.device

    @property
    def reference(self) -> dict[str, torch.Tensor]:
        """Per split, the ``[pairs, 2]`` reference log-probabilities (chosen, rejected)."""
        return self.objective.reference.logps

    @reference.setter
    def reference(self, logps: dict[str, torch.Tensor]) -> None:
        self.objective.reference.logps = logps

    @property
    def _reference_is_policy(self) -> bool:
        return self.objective.reference.is_policy

    @_reference_is_policy.setter
    def _reference_is_policy(self, value: bool) -> None:
        self.objective.reference.is_policy = value

    def _reference_logps(self, loader: Any) -> torch.Tensor:
        return self.objective.reference.score(self.scorer, loader, self.device)

    def _preference(self, batch: dict[str, torch.Tensor], split: str) -> PreferenceOutput:
        return self.objective.preference(self.scorer, batch, split, self.device)
