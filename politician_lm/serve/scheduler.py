"""Iteration-level scheduling: the rows that decode together, in one left-padded KV cache, one token per step.

A request joins the running batch between two steps. The prompts of the requests admitted together run first, in
one forward pass (left-padded, masked), without the head all prompts of a persona start with (system prompt,
template), whose keys and values are computed once per persona and reused (``Prefix``, prefix caching as vLLM does
it). Then their keys and values are put beside the running rows', the shorter side padded on the left to a common length
(masked; each row's position ids come from its own mask, so every token keeps its position). A row that finishes
or whose client is gone leaves right after the step (the last rows move into the slots freed, and columns that are
padding for every remaining row leave the window). The cache is written in place (``row_cache``): a step, a join or
a leave copies no other row's keys and values. Each row names its persona's adapter (``__base__`` for the
bare base, as in PEFT's per-row ``adapter_names``; ``row_lora.RowAdapters`` applies them), so rows of every persona
share each forward pass, and picks its token with its own settings (``sampling.RowSampler``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from politician_lm.model.decoding import MIN_SHARED_PREFIX, cache_keyword
from politician_lm.serve import row_cache
from politician_lm.serve.row_lora import RowAdapters
from politician_lm.serve.sampling import RowSampler
from politician_lm.serve.text import ReplyText

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(eq=False)
class Job:
    """One request. The model thread appends tokens and finishes it; ``events`` carries them to the server thread.
    ``prompt_ids`` may come tokenized (the server checks the prompt's length anyway); ``served`` is set on submit."""

    persona: str
    conversation: list[dict[str, str]]
    max_new_tokens: int
    settings: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    seed: int | None = None
    stop: tuple[str, ...] = ()
    prompt_ids: list[int] | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    tokens: list[int] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finish_reason: str | None = None
    error: str | None = None
    arrived: float = field(default_factory=time.monotonic)
    served: Any = None

    def _send(self, item: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the server's loop is closed (shutdown)
            pass


@dataclass(eq=False)
class Prefix:
    """A persona's prompt head (the tokens all its prompts start with: system prompt, template), run once through
    the model on the first request that needs it; its keys and values stand in for those tokens in every later
    prompt of that persona that starts with exactly them (the same tokens at the same positions: the same keys)."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def covers(self, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` this prefix stands for (0: none; it always leaves one to run)."""
        n = len(self.ids)
        return n if n >= MIN_SHARED_PREFIX and len(ids) > n and ids[:n] == self.ids else 0


@dataclass(eq=False)
class Row:
    """A job in the batch: its adapter, its tokens so far (prompt, then answer), how it picks, where its text is."""

    job: Job
    adapter: str
    ids: list[int]
    sampler: RowSampler
    text: ReplyText | None = None  # only for rows with stop strings
    prefix: Prefix | None = None  # its persona's, when the prompt starts with it

    def advance(self, token: int, eos: int) -> str | None:
        """Take the token just picked: hand it to the job, and say why the row ends here (or None)."""
        job = self.job
        if token == eos:
            return "stop"
        self.ids.append(token)
        job.tokens.append(token)
        job._send(("token", token))
        if self.text is not None:
            self.text.push(token)
            if self.text.stopped:
                return "stop"
        return "length" if len(job.tokens) >= job.max_new_tokens else None


def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class DecodeBatch:
    """The running rows: ``cache`` holds every row's keys and values (left-padded), ``mask`` marks real columns,
    ``next`` is each row's last picked token (not yet in the cache)."""

    def __init__(self, model: Any, eos: int) -> None:
        self.model, self.eos = model, eos
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        self.cache_arg = cache_keyword(base)
        self.keep_arg = "logits_to_keep" in params
        self.adapters = RowAdapters(model) if hasattr(model, "peft_config") else None
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.next: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def _logits(self, ids: torch.Tensor, mask: torch.Tensor, cache: Any, adapters: list[str]) -> torch.Tensor:
        """One forward pass: the last position's float32 logits per row (as ``generate`` takes them)."""
        kwargs: dict[str, Any] = {self.cache_arg: cache}
        if self.keep_arg:
            kwargs["logits_to_keep"] = 1
        positions = (mask.sum(1, keepdim=True) - ids.shape[1]) + torch.arange(ids.shape[1], device=ids.device)
        positions = positions.clamp(min=0)  # a padding column's (masked) may fall below 0; real ones never do
        if self.adapters is not None:
            self.adapters.names = adapters
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        finally:
            if self.adapters is not None:
                self.adapters.names = None
        return out.logits[:, -1].to(dtype=torch.float32)

    def _pick(self, rows: list[Row], logits: torch.Tensor) -> list[int]:
        greedy = logits.argmax(-1).tolist()
        return [
            greedy[i] if row.sampler.plain_greedy else row.sampler.pick(logits[i : i + 1], row.ids, len(row.job.tokens))
            for i, row in enumerate(rows)
        ]

    def prefill(self, rows: list[Row]) -> list[int]:
        """Run the new rows' prompts in one forward pass, put them beside the running rows and return each new row's
        first token, in the order given (the order they now sit in the batch). All or none join.

        A persona's prompt head comes from its ``Prefix`` (keys and values, left-padded to the longest head of these
        rows); the rest of each prompt is left-padded to the longest rest. A row's real columns are therefore its
        head, padding, then the rest of its prompt; the mask hides the padding and every position id comes from the
        row's own mask, so each token is computed at its own position, as if its prompt had run alone."""
        device = self.model.device
        shared = [row.prefix.covers(row.ids) if row.prefix is not None else 0 for row in rows]
        rest = [len(row.ids) - s for row, s in zip(rows, shared)]
        head_width, width = max(shared), max(rest)
        ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(rows), head_width + width, dtype=torch.long, device=device)
        for i, (row, s, n) in enumerate(zip(rows, shared, rest)):
            ids[i, width - n :] = torch.tensor(row.ids[s:], device=device)
            mask[i, head_width - s : head_width] = 1
            mask[i, head_width + width - n :] = 1
        cache = DynamicCache()
        if head_width:
            heads = {i: self._head(row) for i, (row, s) in enumerate(zip(rows, shared)) if s}
            template = next(iter(heads.values()))
            for layer, (k0, v0) in enumerate(template):
                keys, values = [], []
                for i, s in enumerate(shared):
                    k, v = heads[i][layer] if s else (k0[:, :, :0], v0[:, :, :0])
                    keys.append(_pad_left(k, head_width - s, 2))
                    values.append(_pad_left(v, head_width - s, 2))
                cache.update(torch.cat(keys), torch.cat(values), layer)
        picked = self._pick(rows, self._logits(ids, mask, cache, [r.adapter for r in rows]))
        self._join(rows, cache, mask, torch.tensor(picked, device=device))
        return picked

    def _head(self, row: Row) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values of the row's persona prefix, run once (as a batch of one) on first use."""
        prefix = row.prefix
        if prefix.layers is None:
            ids = torch.tensor([prefix.ids], device=self.model.device)
            cache = DynamicCache()
            self._logits(ids, torch.ones_like(ids), cache, [row.adapter])
            prefix.layers = [(layer.keys, layer.values) for layer in cache.layers]
        return prefix.layers

    def _join(self, rows: list[Row], cache: Any, mask: torch.Tensor, nxt: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask, self.next = list(rows), row_cache.adopt(cache), mask, nxt
            return
        opened = row_cache.add_rows(self.cache, cache)
        width = self.mask.shape[1] + opened
        self.mask = torch.cat([_pad_left(self.mask, opened, 1), _pad_left(mask, width - mask.shape[1], 1)])
        self.next = torch.cat([self.next, nxt])
        self.rows += rows

    def step(self) -> list[int]:
        """One decoding step for every row: feed each row's last token, return each row's next one."""
        mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        logits = self._logits(self.next[:, None], mask, self.cache, [r.adapter for r in self.rows])
        self.mask = mask
        picked = self._pick(self.rows, logits)
        self.next = torch.tensor(picked, device=self.next.device)
        return picked

    def keep(self, keep: list[bool]) -> None:
        """Drop the rows not kept (their cache rows with them) and the columns no remaining row uses."""
        if all(keep):
            return
        if not any(keep):
            self.rows, self.cache, self.mask, self.next = [], None, None, None
            return
        kept = torch.tensor([i for i, k in enumerate(keep) if k], device=self.mask.device)
        used = self.mask[kept].any(0).nonzero()
        cut = int(used[0]) if len(used) else 0
        order = row_cache.keep_rows(self.cache, keep, cut)
        index = torch.tensor(order, device=self.mask.device)
        self.rows = [self.rows[i] for i in order]
        self.mask, self.next = self.mask[index, cut:], self.next[index]

    def clear(self) -> list[Row]:
        """Empty the batch (after a failed step); returns the rows that were in it."""
        rows, self.rows, self.cache, self.mask, self.next = self.rows, [], None, None, None
        return rows
