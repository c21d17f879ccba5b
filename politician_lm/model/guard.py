"""Steps whose loss or gradients are NaN/Inf: skipped without changing the weights, and fit stops in one line after
``model.max_bad_steps`` of them in a row (a diverged run, not a stray batch)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from lightning.pytorch.utilities import rank_zero_warn

from politician_lm.errors import UserError


class TrainingDiverged(UserError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteGuard:
    """Counts skipped steps; ``PoliticianLM`` asks it about every loss and every set of gradients."""

    def __init__(self, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self.bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient
        self.skipped_steps = 0

    def check_gradients(self, params: Iterable[torch.nn.Parameter]) -> str | None:
        """If a gradient is NaN/Inf, drop every gradient (optimizers skip parameters without a gradient: no update, no
        moment change) and say why; a finite set of gradients ends a run of bad steps."""
        params = list(params)
        grads = [p.grad for p in params if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.detach().abs().max() for g in grads])).all():
            for p in params:
                p.grad = None
            return "a gradient is NaN/Inf"
        if grads:
            self.bad_steps = 0
        return None

    def skip(self, why: str, step: int, log: Callable[[str, float], object]) -> None:
        """Count a skipped step, log ``skipped_steps`` and warn; raise ``TrainingDiverged`` after too many in a row."""
        self.bad_steps += 1
        self.skipped_steps += 1
        log("skipped_steps", float(self.skipped_steps))
        rank_zero_warn(f"step {step}: {why}; step skipped ({self.bad_steps} in a row)")
        if self.bad_steps >= self.max_bad_steps:
            raise TrainingDiverged(
                f"training stopped at step {step}: {self.bad_steps} steps in a row had a non-finite loss "
                "or gradient; lower the learning rate, check the data, or resume from an earlier checkpoint"
            )
