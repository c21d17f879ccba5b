"""serve.row_cache: after every step, join and leave, each row's unmasked columns hold exactly its own keys and values
in order (what the compact, concatenated cache holds), masked columns are finite, and a step or a leave at the end
writes into the same buffers instead of copying the cache. Real transformers caches, random keys."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from politician_lm.serve import row_cache

HEADS, DIM, LAYERS = 2, 3, 2


class Batch:
    """The scheduler's bookkeeping around a ``row_cache`` cache (mask of real columns, rows' order), with every row's
    real keys and values kept on the side as the reference."""

    def __init__(self, lengths: list[int]) -> None:
        self.cache, self.mask, self.real = None, None, []
        self.join(lengths)

    def _prefill(self, lengths: list[int]) -> tuple[DynamicCache, torch.Tensor, list]:
        width = max(lengths)
        mask = torch.zeros(len(lengths), width, dtype=torch.long)
        cache, real = DynamicCache(), [[[], []] for _ in lengths]
        for layer in range(LAYERS):
            kv = torch.zeros(2, len(lengths), HEADS, width, DIM)
            for i, n in enumerate(lengths):
                kv[:, i, :, width - n :] = torch.randn(2, HEADS, n, DIM)
                mask[i, width - n :] = 1
                if layer == 0:
                    real[i] = [[kv[0, i, :, width - n :]], [kv[1, i, :, width - n :]]]
            cache.update(kv[0], kv[1], layer)
        return cache, mask, real

    def join(self, lengths: list[int]) -> int:
        cache, mask, real = self._prefill(lengths)
        if self.cache is None:
            self.cache, self.mask, self.real = row_cache.adopt(cache), mask, real
            return 0
        opened = row_cache.add_rows(self.cache, cache)
        width = self.mask.shape[1] + opened
        pad = torch.zeros(len(self.real), opened, dtype=torch.long)
        self.mask = torch.cat(
            [torch.cat([pad, self.mask], 1), torch.cat([mask.new_zeros(len(real), width - mask.shape[1]), mask], 1)]
        )
        self.real += real
        return opened

    def step(self) -> None:
        k, v = torch.randn(2, len(self.real), HEADS, 1, DIM)
        for layer in range(LAYERS):
            self.cache.update(k, v, layer)
        for i, (keys, values) in enumerate(self.real):
            keys.append(k[i]), values.append(v[i])
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.real), 1)], 1)

    def keep(self, keep: list[bool]) -> list[int]:
        used = self.mask[torch.tensor(keep)].any(0).nonzero()
        cut = int(used[0])
        order = row_cache.keep_rows(self.cache, keep, cut)
        self.mask = self.mask[torch.tensor(order), cut:]
        self.real = [self.real[i] for i in order]
        return order

    def check(self) -> None:
        layer = self.cache.layers[0]
        assert layer.keys.shape == (len(self.real), HEADS, self.mask.shape[1], DIM)
        assert torch.isfinite(layer.keys).all() and torch.isfinite(layer.values).all()
        for i, (keys, values) in enumerate(self.real):
            real = self.mask[i].bool()
            assert torch.equal(layer.keys[i][:, real], torch.cat(keys, dim=1)), i
            assert torch.equal(layer.values[i][:, real], torch.cat(values, dim=1)), i
            assert self.cache.get_seq_length() == self.mask.shape[1]


def test_every_row_keeps_its_own_keys_through_steps_joins_leaves_and_reallocations():
    torch.manual_seed(0)
    batch = Batch([3, 5])
    batch.check()
    for _ in range(2):
        batch.step()
    batch.check()
    assert batch.join([12, 2]) == 5  # a newcomer wider than the window (7 columns): it opens 5 to the left
    batch.check()
    assert batch.join([1]) == 0
    batch.check()
    order = batch.keep([False, True, True, False, True])  # holes at 0 and 3; the row at 4 moves into 0
    assert order == [4, 1, 2]
    batch.check()
    assert batch.join([4] * 10) == 0  # more rows than the slots have room for
    batch.check()
    for _ in range(row_cache.SPARE_COLUMNS + 5):  # past the columns' room
        batch.step()
    batch.check()
    batch.keep([i % 3 == 0 for i in range(13)])
    batch.check()


def test_a_step_and_a_leave_at_the_end_write_into_the_same_buffers():
    torch.manual_seed(1)
    batch = Batch([4, 6, 5])
    buffers = [(layer.key_buffer.data_ptr(), layer.value_buffer.data_ptr()) for layer in batch.cache.layers]
    batch.step()
    batch.keep([True, True, False])
    batch.join([3])
    batch.step()
    batch.check()
    assert [(layer.key_buffer.data_ptr(), layer.value_buffer.data_ptr()) for layer in batch.cache.layers] == buffers
