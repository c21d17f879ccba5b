"""Keep a tensor autograd would save as the recipe that rebuilds it from tensors kept anyway.

``recompute_saves(target, make)`` is a ``saved_tensors_hooks`` context: while it is active, any view of ``target``
that an operation saves for backward (a linear layer saves its input flattened to 2D) is stored as ``make`` and the
view's geometry, and rebuilt when backward reads it. ``make`` must give ``target``'s values exactly (the forward's
own ops on tensors the graph keeps anyway), so gradients stay bit-identical. Matching goes by the address of
``target``'s memory, so the context may only be active while ``target`` is alive (its memory cannot then belong to
another tensor); the hooks hold no reference to ``target`` itself.

Two users: ``swiglu`` (the MLP's product, rebuilt from ``gate(x)`` and ``up(x)``) and ``recompute_norm_outputs``
below (a decoder layer's RMSNorm outputs, rebuilt from the norm's input). Neither is used under gradient
checkpointing, whose own hooks these would bypass.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["NORMED_LAYERS", "recompute_norm_outputs", "recompute_saves"]

# pre-norm decoder layers: input_layernorm feeds self_attn, post_attention_layernorm feeds mlp
NORMED_LAYERS = frozenset(
    {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer", "GraniteDecoderLayer"}
)
_PAIRS = (("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp"))


class _Recipe:
    __slots__ = ("make", "size", "stride", "offset")

    def __init__(self, make: Callable[[], torch.Tensor], view: torch.Tensor, base_offset: int) -> None:
        self.make, self.size, self.stride = make, view.size(), view.stride()
        self.offset = view.storage_offset() - base_offset


def recompute_saves(target: torch.Tensor, make: Callable[[], torch.Tensor]) -> AbstractContextManager[Any]:
    """The context described above, for ``target`` and the ``make`` that rebuilds it; a context that does nothing
    where nothing would be saved (no gradient wanted) or ``target`` is not contiguous (``make`` gives a new
    contiguous tensor, whose views must have the target's geometry)."""
    if not (torch.is_grad_enabled() and target.requires_grad and target.is_contiguous()):
        return nullcontext()
    storage, base_offset = target.untyped_storage().data_ptr(), target.storage_offset()
    dtype, device = target.dtype, target.device

    def pack(t: torch.Tensor) -> Any:
        if t.dtype == dtype and t.device == device and t.untyped_storage().data_ptr() == storage:
            return _Recipe(make, t, base_offset)
        return t

    def unpack(saved: Any) -> torch.Tensor:
        if not isinstance(saved, _Recipe):
            return saved
        with torch.no_grad():
            full = saved.make()
        return full.as_strided(saved.size, saved.stride, full.storage_offset() + saved.offset)

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def _norm_again(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return type(norm).forward(norm, x)  # the class's forward: the same ops, and no hook of ours runs again


class _NormFeed:
    """Hooks of one norm and the module it feeds: the norm's output is kept as (norm, its input) while it runs."""

    def __init__(self, norm: nn.Module) -> None:
        self.norm = norm
        self.last: tuple[torch.Tensor, int] | None = None
        self.active: list[Any] = []

    def seen(self, module: nn.Module, args: tuple, output: Any) -> None:
        ok = isinstance(output, torch.Tensor) and args and isinstance(args[0], torch.Tensor)
        self.last = (args[0], output.untyped_storage().data_ptr()) if ok else None

    def enter(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        last, self.last = self.last, None
        context: AbstractContextManager[Any] = nullcontext()
        if last is not None and isinstance(x, torch.Tensor) and x.untyped_storage().data_ptr() == last[1]:
            context = recompute_saves(x, partial(_norm_again, self.norm, last[0]))
        context.__enter__()
        self.active.append(context)

    def leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.active:
            self.active.pop().__exit__(None, None, None)


def recompute_norm_outputs(model: nn.Module) -> list[RemovableHandle]:
    """Keep each pre-norm decoder layer's two norm outputs as recipes while the module they feed runs (the LoRA
    layers there save them for their weight gradients; the norm keeps its input anyway). Returns the hooks' handles
    (three per norm)."""
    handles: list[RemovableHandle] = []
    for layer in model.modules():
        if type(layer).__name__ not in NORMED_LAYERS:
            continue
        for norm_name, fed_name in _PAIRS:
            norm, fed = getattr(layer, norm_name, None), getattr(layer, fed_name, None)
            if norm is None or fed is None:
                continue
            feed = _NormFeed(norm)
            handles += [
                norm.register_forward_hook(feed.seen),
                fed.register_forward_pre_hook(feed.enter, with_kwargs=True),
                fed.register_forward_hook(feed.leave, always_call=True),
            ]
    return handles
