"""The running batch's keys and values, kept in place: a step, a join or a leave copies no other row's cache.

transformers' ``DynamicLayer`` appends a step's keys and values with ``torch.cat``, a copy of the layer's whole cache
at every step, and a batch whose rows come and go would copy it again at every join (the newcomers padded beside the
running rows) and every leave (the rows kept, selected by index). ``RowLayer`` keeps each layer's keys and values in
buffers of ``[slots, heads, columns, head_dim]`` with room to spare, and shows the model views of the live part:
rows ``[:rows]``, columns ``[start:end]``, all rows ending at the same column, left-padded (the scheduler's mask hides
the padding). So:

- a step writes one column for every row (``update``);
- a join writes the newcomers' keys into free slots, their prompts ending at ``end``; when a newcomer's prompt is
  wider than the window, the window opens to the left over columns the running rows mask as padding (``add_rows``);
- a leave moves the last kept rows into the slots of the rows that left and narrows the window to the columns some
  remaining row uses (``keep_rows``);
- only when the buffers are full are they reallocated, with ``SPARE_SLOTS`` and ``SPARE_COLUMNS`` more room.

Columns a row masks hold zeros or keys of a row that was there before: finite numbers that attention weighs by
exactly 0, so every real column's result is what the compact cache gives (the scheduler's tests compare answers
with each request served alone, token for token).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["RowLayer", "add_rows", "adopt", "keep_rows"]

SPARE_SLOTS = 8
SPARE_COLUMNS = 64


class RowLayer(DynamicLayer):
    """A layer of the running batch's cache: buffers with room, ``keys``/``values`` views of the live rows and
    columns (what the model and ``get_seq_length`` read)."""

    key_buffer: torch.Tensor
    value_buffer: torch.Tensor
    rows: int = 0
    start: int = 0
    end: int = 0

    def _show(self) -> None:
        self.keys = self.key_buffer[: self.rows, :, self.start : self.end]
        self.values = self.value_buffer[: self.rows, :, self.start : self.end]

    def reallocate(self, slots: int, columns: int, end: int) -> None:
        """New zeroed buffers of ``slots`` x ``columns``, the live window copied in to end at column ``end``."""
        width = self.end - self.start
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            new = old.new_zeros((slots, old.shape[1], columns, old.shape[3]))
            new[: self.rows, :, end - width : end] = old[: self.rows, :, self.start : self.end]
            setattr(self, name, new)
        self.start, self.end = end - width, end
        self._show()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if self.end + new > self.key_buffer.shape[2]:
            width = self.end - self.start
            self.reallocate(self.key_buffer.shape[0], width + new + SPARE_COLUMNS, width)
        self.key_buffer[: self.rows, :, self.end : self.end + new] = key_states
        self.value_buffer[: self.rows, :, self.end : self.end + new] = value_states
        self.end += new
        self._show()
        return self.keys, self.values


def adopt(cache: Any) -> Any:
    """Make every ``DynamicLayer`` of ``cache`` (a prefill's, the rows of a new batch) a ``RowLayer`` holding the same
    keys and values; returns ``cache``."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise TypeError(f"the scheduler keeps plain DynamicLayer caches, not {type(layer).__name__}")
        keys, values = layer.keys, layer.values
        layer.__class__ = RowLayer
        layer.key_buffer, layer.value_buffer = keys, values
        layer.rows, layer.start, layer.end = keys.shape[0], 0, keys.shape[2]
        layer.reallocate(keys.shape[0] + SPARE_SLOTS, keys.shape[2] + SPARE_COLUMNS, keys.shape[2])
    return cache


def add_rows(cache: Any, new: Any) -> int:
    """Put the rows of ``new`` (a prefill's cache, left-padded among themselves) after ``cache``'s rows, their last
    column at the running rows' last. Returns how many columns the window opened to the left: the running rows' mask
    gains that many padding columns on the left, the newcomers' that many fewer than the window's width minus theirs."""
    opened = 0
    for mine, theirs in zip(cache.layers, new.layers):
        count, width = theirs.keys.shape[0], theirs.keys.shape[2]
        slots, columns = mine.key_buffer.shape[0], mine.key_buffer.shape[2]
        if mine.rows + count > slots or width > mine.end:
            end = max(mine.end, width)
            mine.reallocate(max(slots, mine.rows + count + SPARE_SLOTS), max(columns, end + SPARE_COLUMNS), end)
        opened = max(0, width - (mine.end - mine.start))
        mine.start -= opened
        rows, end = slice(mine.rows, mine.rows + count), mine.end
        mine.key_buffer[rows, :, end - width : end] = theirs.keys
        mine.value_buffer[rows, :, end - width : end] = theirs.values
        mine.rows += count
        mine._show()
    return opened


def keep_rows(cache: Any, keep: list[bool], cut: int) -> list[int]:
    """Keep the rows marked in ``keep`` and drop the first ``cut`` columns of the window (padding for every kept row).
    The rows kept past the new end move into the slots of rows that left, so only they are copied. Returns the new
    order: position ``i`` holds the row that was at ``order[i]``."""
    kept = [i for i, k in enumerate(keep) if k]
    order = list(range(len(kept)))
    holes = [i for i in order if not keep[i]]
    movers = [i for i in kept if i >= len(kept)]
    for hole, mover in zip(holes, movers):
        order[hole] = mover
    for layer in cache.layers:
        if holes:
            to = torch.tensor(holes, device=layer.key_buffer.device)
            source = torch.tensor(movers, device=to.device)
            for buffer in (layer.key_buffer, layer.value_buffer):
                window = buffer[:, :, layer.start : layer.end]
                window.index_copy_(0, to, window[source])
        layer.rows, layer.start = len(kept), layer.start + cut
        layer._show()
    return order
