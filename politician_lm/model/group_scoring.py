"""Scoring groups of conversations that differ only in their answers (the stance probe: one question, eight answers)
with every answer of a group in one row.

A group's rows share their tokens up to the answer; one row then holds that question once and each answer after it,
every answer at the positions it has in its own conversation (``position_ids``) and seeing the question and its own
earlier tokens only (a block-diagonal mask, as a preference pair's two answers see one prompt:
``preference.pair_attention_mask``). The tokens every group of a pass starts with (the chat template and system
prompt) run once, as a batch of one, and their keys and values serve every row and the next pass. So each scored
token sees the same tokens at the same positions as in its own conversation, and the answers' padding, which a
row per answer pads to the longest answer, is gone. Several groups run in one forward pass: the matrix products
then have thousands of rows instead of a hundred, which is most of the gain on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from politician_lm.batch import IGNORE_INDEX, SEGMENT_PAD, SEGMENT_PROMPT
from politician_lm.model.decoding import MIN_SHARED_PREFIX, CarriedPrefix, common_prefix_length
from politician_lm.model.head_loss import token_nll
from politician_lm.model.preference import pair_attention_mask

__all__ = ["TOKENS_PER_PASS", "grouped_losses", "takes_block_mask"]

TOKENS_PER_PASS = 2048  # a pass's rows x its widest row, at most (one group alone may be wider)


def takes_block_mask(model: Any) -> bool:
    """Whether ``model``'s attention takes the 4D mask a group's row needs: SDPA and eager do; FlashAttention reads
    only a padding mask (it would let every answer see the others), and other kernels are not known here."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) in ("sdpa", "eager")


def _first_scored(row: dict[str, Any]) -> int:
    """The first position that predicts a labelled token (one before the first label), or the row's length."""
    return next((t - 1 for t, label in enumerate(row["labels"]) if label != IGNORE_INDEX), len(row["input_ids"]))


def _group_row(
    rows: list[dict[str, Any]], start: int
) -> tuple[list[int], list[int], list[int], list[tuple[int, int, int]]]:
    """One group as one row from token ``start`` on: ``(ids, segments, positions, scored)``. The tokens all rows
    share run once, then each row's own tokens at its own positions, without its last token (which predicts
    nothing). ``scored`` holds ``(index in the row, target, row of the group)`` of every labelled prediction: a
    shared token's hidden state serves every row (the last one before the answers predicts each answer's first)."""
    live = [j for j, r in enumerate(rows) if any(label != IGNORE_INDEX for label in r["labels"][1:])]
    lengths = [len(rows[j]["input_ids"]) for j in live]
    shared = max(common_prefix_length([rows[j]["input_ids"] for j in live], min(lengths) - 1), start) if live else start
    ids = list(rows[live[0]]["input_ids"][start:shared]) if live else []
    segments, positions, scored = [SEGMENT_PROMPT] * len(ids), list(range(start, shared)), []
    for j in live:
        row, offset = rows[j], len(ids)
        tail = row["input_ids"][shared:-1]
        ids += tail
        segments += [SEGMENT_PROMPT + 1 + j] * len(tail)
        positions += range(shared, shared + len(tail))
        for t, target in enumerate(row["labels"][1:]):  # position t predicts token t + 1
            if target != IGNORE_INDEX:
                scored.append((t - start if t < shared else offset + t - shared, target, j))
    return ids, segments, positions, scored


def _pass(
    body: Any, head: Any, groups: list[list[dict[str, Any]]], prefix: CarriedPrefix, pad: int
) -> list[tuple[float, int]]:
    """``(summed NLL, labelled tokens)`` of every row of ``groups``, in order, from one forward pass."""
    live = [r["input_ids"][: _first_scored(r)] for g in groups for r in g if r["input_ids"]]
    start = (
        common_prefix_length(live, min(map(len, live))) if live else 0
    )  # no scored position inside: it gets no hidden state
    start = start if start >= MIN_SHARED_PREFIX else 0
    device, cache = body.get_input_embeddings().weight.device, {}
    if start:  # the prefix's keys and values, one row each (carried from the last pass where it starts the same)
        rows = torch.tensor([live[0][:start]] * len(groups), device=device)
        cache = prefix.cache(body, rows, torch.ones_like(rows), start)
        start = start if cache else 0  # a cache that cannot be repeated: every token runs
    built = [_group_row(g, start) for g in groups]
    if not any(b[3] for b in built):  # nothing to score (rows dropped as too long, say): no forward pass
        return [(0.0, 0)] * sum(map(len, groups))
    width = max(1, *(len(b[0]) for b in built))

    def padded(i: int, fill: int) -> torch.Tensor:
        return torch.tensor([b[i] + [fill] * (width - len(b[i])) for b in built], device=device)

    ids, segments, positions = padded(0, pad), padded(1, SEGMENT_PAD), padded(2, 0)
    # [groups, 1, width, width]: each row's tokens see the shared ones and their own; eager attention adds its mask
    eager = body.config._attn_implementation == "eager"
    mask = pair_attention_mask(segments, body.get_input_embeddings().weight.dtype if eager else None)
    if start:  # every token sees the prefix: True, or 0 added
        seen = mask.new_zeros if eager else mask.new_ones
        mask = torch.cat([seen((*mask.shape[:3], start)), mask], dim=-1)
    hidden = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=bool(start), **cache)
    per = max(len(g) for g in groups)
    at, targets, slot = (
        torch.tensor(column, dtype=torch.long, device=device)
        for column in zip(*[(g * width + i, target, g * per + j) for g, b in enumerate(built) for i, target, j in b[3]])
    )
    nll = token_nll(hidden.last_hidden_state.flatten(0, 1)[at], head, targets)
    sums = torch.zeros(len(groups) * per, dtype=nll.dtype, device=nll.device).index_add_(0, slot, nll).tolist()
    counts = torch.bincount(slot, minlength=len(groups) * per).tolist()
    return [
        (float(sums[g * per + j]), int(counts[g * per + j])) for g, rows in enumerate(groups) for j in range(len(rows))
    ]


def _width(group: list[dict[str, Any]]) -> int:
    """About the length of ``group``'s row: its rows' tokens with their shared start counted once (to sort by)."""
    ids = [r["input_ids"] for r in group]
    return sum(map(len, ids)) - (len(ids) - 1) * common_prefix_length(ids, min(map(len, ids), default=0))


def _passes(widths: list[int], tokens: int) -> list[list[int]]:
    """The groups' indices, shortest first, cut into passes of at most ``tokens`` padded tokens (rows x the widest):
    rows of like length share a pass, so little of a pass is padding."""
    passes: list[list[int]] = []
    for i in sorted(range(len(widths)), key=widths.__getitem__):
        if not passes or (len(passes[-1]) + 1) * widths[i] > tokens:
            passes.append([])
        passes[-1].append(i)
    return passes


def grouped_losses(
    body: Any,
    head: Any,
    rows: list[dict[str, Any]],
    group: int,
    pad: int,
    on_group: Callable[[int], Any] = lambda _: None,
    tokens_per_pass: int = TOKENS_PER_PASS,
) -> list[tuple[float, int]]:
    """``(summed NLL, labelled tokens)`` of each encoded row (``data.tokenize.encode``), in order, where every
    ``group`` consecutive rows share their tokens up to the answer. Groups of like length run together, shortest
    first (a row's numbers depend on its pass only in fp32 rounding). ``on_group(n)`` after each pass of n groups."""
    groups = [rows[i : i + group] for i in range(0, len(rows), group)]
    prefix, out = CarriedPrefix(), [[] for _ in groups]
    for chunk in _passes([_width(g) for g in groups], tokens_per_pass):
        scored = iter(_pass(body, head, [groups[i] for i in chunk], prefix, pad))
        for i in chunk:
            out[i] = [next(scored) for _ in groups[i]]
        on_group(len(chunk))
    return [loss for losses in out for loss in losses]
