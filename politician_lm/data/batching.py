"""Batch plans that cut padding: best-fit-decreasing packing (padding-free rows) and length-grouped batches.

Both are batch samplers whose order is a function of (seed, epoch): Lightning calls ``set_epoch`` each epoch, and
``start`` lets a resumed run begin part-way into an epoch, as the DataModule's resume logic expects.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def best_fit_decreasing(lengths: list[int], capacity: int, seed: int) -> list[list[int]]:
    """Bins (lists of example indices) whose lengths sum to at most ``capacity``; ties broken by a seeded shuffle."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep the shuffled order
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin), sorted: the best fit is the first with enough room
    for i in order:
        k = bisect.bisect_left(free, (lengths[i], -1))
        if k == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - lengths[i], len(bins) - 1))
        else:
            room, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (room - lengths[i], b))
    return bins


class EpochBatchSampler(Sampler[list[int]]):
    """Yields the batches of ``plan(epoch)``, shuffled per (seed, epoch), from position ``start``."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, packing: bool, max_length: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.packing, self.max_length = packing, max_length
        self.epoch, self.start = 0, 0
        self._len = len(self._batches(0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, epoch: int) -> list[list[int]]:
        seed = self.seed * 1_000_003 + epoch
        rng = random.Random(seed)
        if self.packing:
            # rows of max_length tokens, batch_size rows per batch; PackedRowsCollator lays the batch out as rows
            rows = best_fit_decreasing(self.lengths, self.max_length, seed)
            rows.sort(key=lambda r: -sum(self.lengths[i] for i in r))
            batches = [sum(rows[i:i + self.batch_size], []) for i in range(0, len(rows), self.batch_size)]
        else:
            # length grouping: sort within shuffled mega-batches of 50 batches, so each batch has similar lengths
            order = list(range(len(self.lengths)))
            rng.shuffle(order)
            mega = 50 * self.batch_size
            batches = []
            for m in range(0, len(order), mega):
                chunk = sorted(order[m:m + mega], key=lambda i: -self.lengths[i])
                batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)[self.start:]
        self.start = 0
        return iter(batches)

    def __len__(self) -> int:
        return self._len


class PackedRowsCollator:
    """Pack a batch's examples best-fit-decreasing into rows of at most ``max_length`` tokens.

    Returns ``input_ids``/``labels``/``position_ids`` of shape [rows, longest row] and no attention mask:
    ``position_ids`` restart at every example (and at the padding that ends a row), and with ``use_cache=False``
    transformers builds a block-diagonal causal mask from them, so an example never attends to another one in its
    row. The first label of each example is masked, so no token is predicted from the previous example. Rows are few
    and nearly full, so padding is small, and attention stays per row (cost rows x max_length^2, not
    (rows x max_length)^2 as when a whole batch is flattened into one sequence for SDPA). With FlashAttention the
    module flattens the rows into one varlen sequence (see ``PoliticianLM._loss``). ``real_tokens`` counts the
    non-pad tokens (for throughput).
    """

    def __init__(self, max_length: int, pad_token_id: int, ignore_index: int = -100) -> None:
        self.max_length, self.pad, self.ignore = max_length, pad_token_id, ignore_index

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        rows = best_fit_decreasing(lengths, max(self.max_length, max(lengths)), seed=0)
        width = max(sum(lengths[i] for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), width), self.ignore, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = lengths[i]
                ids[r, at:at + n] = torch.tensor(features[i]["input_ids"])
                labels[r, at:at + n] = torch.tensor(features[i]["labels"])
                labels[r, at] = self.ignore
                positions[r, at:at + n] = torch.arange(n)
                at += n
            positions[r, at:] = torch.arange(width - at)  # the row's padding is a segment of its own
        return {"input_ids": ids, "labels": labels, "position_ids": positions,
                "real_tokens": torch.tensor(sum(lengths)), "sequences": torch.tensor(len(features))}
