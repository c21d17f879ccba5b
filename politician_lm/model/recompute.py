"""Keep a tensor autograd would save as the recipe that rebuilds it from tensors kept anyway.

``recompute_saves(target, make)`` is a ``saved_tensors_hooks`` context: while it is active, any view of ``target``
that an operation saves for backward (a linear layer saves its input flattened to 2D) is stored as ``make`` and the
view's geometry, and rebuilt when backward reads it. ``make`` must give ``target``'s values exactly (the forward's
own ops on tensors the graph keeps anyway), so gradients stay bit-identical. Matching goes by the address of
``target``'s memory, so the context may only be active while ``target`` is alive (its memory cannot then belong to
another tensor); the hooks hold no reference to ``target`` itself.

Every other tensor saved while the context is active goes on to the saved-tensor hooks that were active where it
was entered (``pass_on``): autograd runs only the innermost hooks, so without this a caller's hooks (activation
offloading such as ``torch.autograd.graph.save_on_cpu``, a memory probe, another recipe context outside this one)
would see nothing saved inside it. ``Recipe``, ``outer_hooks``, ``pass_on`` and ``unpack_saved`` are the pieces
the other recipe hooks (``model.lora_dropout``) are made of too.

Three users: ``swiglu`` (the MLP's product, rebuilt from ``gate(x)`` and ``up(x)``), ``recompute_norm_outputs``
below (a decoder layer's RMSNorm outputs, rebuilt from the norm's input) and ``lora_dropout``. None is used under
gradient checkpointing, which keeps none of these tensors anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "NORMED_LAYERS", "Recipe", "outer_hooks", "pass_on", "recompute_norm_outputs", "recompute_saves", "unpack_saved",
]  # fmt: skip

# pre-norm decoder layers: input_layernorm feeds self_attn, post_attention_layernorm feeds mlp
NORMED_LAYERS = frozenset(
    {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer", "GraniteDecoderLayer"}
)
_PAIRS = (("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp"))

Hooks = tuple[Callable[[torch.Tensor], Any], Callable[[Any], torch.Tensor]]


class Recipe:
    """What a pack hook keeps in place of a tensor: ``make()`` rebuilds it (run without a gradient); with ``view``
    (a view of the tensor ``make`` gives, whose storage starts at ``base_offset``) that view's geometry is applied."""

    __slots__ = ("make", "size", "stride", "offset")

    def __init__(self, make: Callable[[], torch.Tensor], view: torch.Tensor | None = None, base_offset: int = 0):
        self.make, self.size, self.stride, self.offset = make, None, None, 0
        if view is not None:
            self.size, self.stride, self.offset = view.size(), view.stride(), view.storage_offset() - base_offset

    def rebuild(self) -> torch.Tensor:
        with torch.no_grad():
            full = self.make()
        if self.size is None:
            return full
        return full.as_strided(self.size, self.stride, full.storage_offset() + self.offset)


class _Passed:
    """A tensor as the hooks outside packed it, with their unpack."""

    __slots__ = ("unpack", "packed")

    def __init__(self, hooks: Hooks, t: torch.Tensor) -> None:
        self.unpack, self.packed = hooks[1], hooks[0](t)


def outer_hooks() -> Hooks | None:
    """The saved-tensor hooks active here (None: none, or a torch without the private call that reads them)."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top(False) if top is not None else None


def pass_on(hooks: Hooks | None, t: torch.Tensor) -> Any:
    """``t`` as ``hooks`` (``outer_hooks()`` where a context was entered) keep it; ``t`` itself where there are none."""
    return t if hooks is None else _Passed(hooks, t)


def unpack_saved(saved: Any) -> torch.Tensor:
    """The unpack hook of every pack hook made of ``Recipe`` and ``pass_on``."""
    if isinstance(saved, Recipe):
        return saved.rebuild()
    if isinstance(saved, _Passed):
        return saved.unpack(saved.packed)
    return saved


def recompute_saves(target: torch.Tensor, make: Callable[[], torch.Tensor]) -> AbstractContextManager[Any]:
    """The context described above, for ``target`` and the ``make`` that rebuilds it; a context that does nothing
    where nothing would be saved (no gradient wanted) or ``target`` is not contiguous (``make`` gives a new
    contiguous tensor, whose views must have the target's geometry)."""
    if not (torch.is_grad_enabled() and target.requires_grad and target.is_contiguous()):
        return nullcontext()
    storage, base_offset = target.untyped_storage().data_ptr(), target.storage_offset()
    dtype, device = target.dtype, target.device
    outer = outer_hooks()

    def pack(t: torch.Tensor) -> Any:
        if t.dtype == dtype and t.device == device and t.untyped_storage().data_ptr() == storage:
            return Recipe(make, t, base_offset)
        return pass_on(outer, t)

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack_saved)


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
