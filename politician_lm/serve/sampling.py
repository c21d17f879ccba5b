"""Each row's next token by its own settings, as ``generate`` picks it for a batch of one: repetition penalty,
``min_new_tokens``, then (sampling) temperature, top-k and top-p, with transformers' own logits processors, applied
to that row's float32 logits only. Every row draws from its own ``torch.Generator`` (seeded by the request's
``seed``, else at random), so a seeded answer is the same alone or beside any other rows."""

from __future__ import annotations

from typing import Any

import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

SETTINGS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "min_new_tokens")
# what generate falls back to when neither the request nor the model's generation_config sets a value
GENERATE_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}
SEED_MASK = (1 << 64) - 1  # torch seeds are 64-bit; OpenAI's seed is any integer


def model_defaults(model: Any) -> dict[str, Any]:
    """The sampling settings ``generate`` would use for ``model`` when a request sets none."""
    config = getattr(model, "generation_config", None)
    saved = {k: getattr(config, k, None) for k in SETTINGS}
    return {**GENERATE_DEFAULTS, **{k: v for k, v in saved.items() if v is not None}}


class RowSampler:
    """One row's settings and random generator. Built when the row joins, so a bad setting fails that row alone."""

    def __init__(self, settings: dict[str, Any], defaults: dict[str, Any], eos: int, seed: int | None = None) -> None:
        s = {**defaults, **{k: v for k, v in settings.items() if v is not None}}
        unknown = set(s) - set(SETTINGS) - {"max_new_tokens"}
        if unknown:
            raise ValueError(f"unsupported generation settings: {', '.join(sorted(unknown))}")
        self.do_sample, self.eos = bool(s["do_sample"]), eos
        self.min_new = int(s.get("min_new_tokens") or 0)
        self.penalty = None
        if s["repetition_penalty"] is not None and s["repetition_penalty"] != 1.0:
            self.penalty = RepetitionPenaltyLogitsProcessor(float(s["repetition_penalty"]))
        self.warpers: list[Any] = []
        if self.do_sample:
            if s["temperature"] is not None and s["temperature"] != 1.0:
                self.warpers.append(TemperatureLogitsWarper(float(s["temperature"])))
            if s["top_k"]:
                self.warpers.append(TopKLogitsWarper(int(s["top_k"])))
            if s["top_p"] is not None and s["top_p"] < 1.0:
                self.warpers.append(TopPLogitsWarper(float(s["top_p"])))
        self.seed = seed
        self.generator: torch.Generator | None = None

    @property
    def plain_greedy(self) -> bool:
        """The argmax of the raw logits (no processor at all): picked for many rows at once."""
        return not self.do_sample and self.penalty is None and self.min_new == 0

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
            if self.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.seed & SEED_MASK)
        return self.generator

    def pick(self, scores: torch.Tensor, ids: list[int], generated: int) -> int:
        """The next token from one row's ``[1, vocab]`` float32 logits; ``ids`` is the row so far (prompt and
        answer), ``generated`` how many answer tokens it has."""
        if self.penalty is not None:
            scores = self.penalty(torch.tensor([ids], device=scores.device), scores)
        if generated < self.min_new:
            scores = scores.clone()
            scores[:, self.eos] = -float("inf")
        if not self.do_sample:
            return int(scores.argmax(-1))
        for warper in self.warpers:
            scores = warper(None, scores)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator(scores.device)))
