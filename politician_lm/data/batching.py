"""Batch plans that cut padding: best-fit-decreasing packing (padding-free rows) and length-grouped batches.

Both are batch plans whose order is a function of (seed, epoch): Lightning calls ``set_epoch`` each epoch, and
``start`` lets a resumed run begin part-way into an epoch, as the DataModule's resume logic expects. Under DDP every
rank builds the same plan and takes every ``num_replicas``-th batch, so ranks see disjoint batches, the same number
of them.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler


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


class EpochBatchSampler(DistributedSampler):
    """Yields this rank's batches (lists of example indices) of ``plan(epoch)``, shuffled per (seed, epoch).

    A ``DistributedSampler`` built with the real world size, so Lightning keeps it under DDP instead of injecting its
    own; it is the loader's ``sampler`` with ``batch_size=None`` and the dataset wrapped in ``IndexedBatches``. When
    the batches do not divide evenly, the first ones are repeated on the last ranks (as ``DistributedSampler`` does).
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        packing: bool,
        max_length: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths, self.batch_size = lengths, batch_size
        self.packing, self.max_length = packing, max_length
        self.start = 0
        self._len = -(-len(self._batches(0)) // num_replicas)

    def _batches(self, epoch: int) -> list[list[int]]:
        seed = self.seed * 1_000_003 + epoch
        rng = random.Random(seed)
        if self.packing:
            # rows of max_length tokens, batch_size rows per batch; PackedRowsCollator lays the batch out as rows
            rows = best_fit_decreasing(self.lengths, self.max_length, seed)
            rows.sort(key=lambda r: -sum(self.lengths[i] for i in r))
            batches = [sum(rows[i : i + self.batch_size], []) for i in range(0, len(rows), self.batch_size)]
        else:
            # length grouping: sort within shuffled mega-batches of 50 batches, so each batch has similar lengths
            order = list(range(len(self.lengths)))
            rng.shuffle(order)
            mega = 50 * self.batch_size
            batches = []
            for m in range(0, len(order), mega):
                chunk = sorted(order[m : m + mega], key=lambda i: -self.lengths[i])
                batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        padded = self._len * self.num_replicas
        batches = (batches * -(-padded // len(batches)))[:padded]  # repeat from the start until every rank has _len
        mine = batches[self.rank :: self.num_replicas][self.start :]
        self.start = 0
        return iter(mine)

    def __len__(self) -> int:
        return self._len


class ResumableSampler(DistributedSampler):
    """Shuffles as a function of (seed, epoch) (Lightning calls ``set_epoch``) and can start part-way into an epoch.

    Built with the real world size, so DDP keeps it instead of wrapping it. The DataModule sets ``start`` when a
    run resumes mid-epoch.
    """

    start = 0

    def __iter__(self):
        indices = list(super().__iter__())[self.start :]
        self.start = 0
        return iter(indices)


class IndexedBatches(Dataset):
    """A dataset read a batch at a time: ``batches[[i, j, ...]]`` is the list of those examples."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __getitem__(self, indices: list[int]) -> list[dict]:
        return self.dataset.__getitems__(indices)

    def __len__(self) -> int:
        return len(self.dataset)


class PackedRowsCollator:
    """Pack a batch's examples best-fit-decreasing into rows of at most ``max_length`` tokens.

    Returns ``input_ids``/``labels``/``position_ids`` of shape [rows, longest row] and no attention mask:
    ``position_ids`` restart at every example (and at the padding that ends a row), and with ``use_cache=False``
    transformers builds a block-diagonal causal mask from them, so an example never attends to another one in its
    row. The first label of each example is masked, so no token is predicted from the previous example. Rows are few
    and nearly full, so padding is small, and attention stays per row (cost rows x max_length^2, not
    (rows x max_length)^2 as when a whole batch is flattened into one sequence for SDPA). With FlashAttention the
    module flattens the rows into one varlen sequence (see ``model.scoring.Scorer``). ``real_tokens`` counts the
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
                ids[r, at : at + n] = torch.tensor(features[i]["input_ids"])
                labels[r, at : at + n] = torch.tensor(features[i]["labels"])
                labels[r, at] = self.ignore
                positions[r, at : at + n] = torch.arange(n)
                at += n
            positions[r, at:] = torch.arange(width - at)  # the row's padding is a segment of its own
        return {
            "input_ids": ids,
            "labels": labels,
            "position_ids": positions,
            "real_tokens": torch.tensor(sum(lengths)),
            "sequences": torch.tensor(len(features)),
        }


def start_at(loader: Any, resume: tuple[int, int] | None, n_batches: int) -> Any:
    """``loader``'s sampler, set where a resumed fit left it: ``resume`` is ``(epoch, batches done in it)`` from the
    checkpoint (None: a fresh start); an epoch with all ``n_batches`` done resumes at the next epoch's start."""
    sampler = loader.sampler
    if resume is not None:
        epoch, done = resume
        sampler.set_epoch(epoch + 1 if done >= n_batches else epoch)
        sampler.start = 0 if done >= n_batches else done * (loader.batch_size or 1)
    return sampler


class Cycled:
    """A train loader repeated without end, its sampler's epoch as Lightning sets it: batches drawn alongside a main
    loader by ``CombinedLoader(..., "min_size")``, which then stops when the main loader does."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    @property
    def sampler(self) -> Any:  # what Lightning calls set_epoch on
        return self.loader.sampler

    def __iter__(self) -> Any:
        while True:
            yield from self.loader
