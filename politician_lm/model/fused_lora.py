"""A LoRA layer adds its update into the base layer's output with one matrix product (``addmm``).

PEFT computes an active adapter as ``result = result + lora_B(lora_A(dropout(x))) * scaling``: ``lora_B`` makes a
new tensor as wide as the layer's output, ``* scaling`` a second, ``+`` a third (and its 4-bit layer clones the base
output first, a fourth); in training, the backward of ``* scaling`` makes one more. With SmolLM2's seven adapted
projections in each of 30 layers that is hundreds of full-width temporaries a forward pass, and on a 2-core CPU,
where those passes over memory cost as much as the narrow products themselves, the adapter arm of ``evaluate`` ran
its stance probe 23% slower than the same model with the adapter off (``docs/performance.md``).

The fused layers (``FusedLinear``, ``FusedLinear4bit``: PEFT's classes with another ``forward``) compute the same
sum as ``addmm(result, lora_A(dropout(x)), lora_B.weight.T, alpha=scaling)``: BLAS adds ``scaling * (lora_A(x) @
lora_B.weight.T)`` into the base output, in place where no gradient is recorded, else as one new tensor, whose
backward makes only rank-wide tensors besides the gradient it passes on. The value is PEFT's to float32 rounding
(the scale is applied inside the product instead of after it), not bit for bit; the dropout draws are PEFT's (the
same calls in the same order). It applies to float32 outputs without autocast (fp32 training and inference on CPU),
vanilla LoRA without a bias on ``lora_B`` and without PEFT's per-row ``adapter_names``; every other call (bf16
autocast on a GPU, DoRA, a mixed batch) runs PEFT's own forward. ``fuse_lora_layers`` swaps the class of every PEFT
LoRA ``Linear`` and 4-bit ``Linear4bit`` (``unfuse_lora_layers`` swaps it back); the module's weights, names and
state dict are unchanged. ``POLITICIAN_LM_FUSED_LORA=0`` keeps PEFT's forward everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch

from politician_lm.switches import FUSED_LORA, switched_off

__all__ = ["SWITCH", "fuse_lora_layers", "fused_class", "unfuse_lora_layers"]

SWITCH = FUSED_LORA  # "0": PEFT's own LoRA forward everywhere


def _peft_layers() -> tuple[type, ...]:
    """PEFT's LoRA layer classes that the fused forward stands in for (the 4-bit one only where bitsandbytes is)."""
    from peft.tuners.lora import layer

    try:
        from peft.tuners.lora.bnb import Linear4bit
    except ImportError:  # no bitsandbytes
        return (layer.Linear,)
    return (layer.Linear, Linear4bit)


def _fusable(layer: Any, x: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> bool:
    return not (
        args
        or kwargs
        or layer.disable_adapters
        or layer.merged
        or x.dtype != torch.float32
        or torch.is_autocast_enabled(x.device.type)
        or any(_variant(layer, a) for a in layer.active_adapters)
    )


def _variant(layer: Any, name: str) -> bool:
    """Whether adapter ``name`` of ``layer`` is not vanilla LoRA (DoRA and PEFT's other variants; ``lora_variant``
    is newer than the oldest PEFT this package allows, ``use_dora`` older)."""
    return bool(
        (getattr(layer, "lora_variant", None) or {}).get(name) or (getattr(layer, "use_dora", None) or {}).get(name)
    )


def _forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    peft_forward = type(self).__bases__[0].forward
    if not _fusable(self, x, args, kwargs):
        return peft_forward(self, x, *args, **kwargs)
    adapters = [name for name in self.active_adapters if name in self.lora_A]
    pairs = [(self.lora_A[name], self.lora_B[name]) for name in adapters]
    if any(a.weight.dtype != torch.float32 or b.weight.dtype != torch.float32 or b.bias is not None for a, b in pairs):
        return peft_forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    if result.dtype != torch.float32:
        return peft_forward(self, x, *args, **kwargs)
    rows = x.reshape(-1, x.shape[-1])
    if not torch.is_grad_enabled() and result.is_contiguous():  # nothing recorded: add into the fresh output
        flat = result.view(-1, result.shape[-1])
        for name, (a, b) in zip(adapters, pairs):
            flat.addmm_(a(self.lora_dropout[name](rows)), b.weight.t(), alpha=self.scaling[name])
        return result
    flat = result.reshape(-1, result.shape[-1])
    for name, (a, b) in zip(adapters, pairs):
        flat = torch.addmm(flat, a(self.lora_dropout[name](rows)), b.weight.t(), alpha=self.scaling[name])
    return flat.view(result.shape)


@functools.cache
def fused_class(base: type) -> type:
    """``Fused<base>``: PEFT's ``base`` layer class with the forward above."""
    return type(f"Fused{base.__name__}", (base,), {"forward": _forward, "__module__": __name__})


def fuse_lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Give every PEFT LoRA ``Linear`` and ``Linear4bit`` of ``model`` (exactly those classes) the fused forward;
    returns the layers changed."""
    if switched_off(SWITCH):
        return []
    try:
        bases = _peft_layers()
    except ImportError:
        return []
    layers = [m for m in model.modules() if type(m) in bases]
    for layer in layers:
        layer.__class__ = fused_class(type(layer))
    return layers


def unfuse_lora_layers(layers: Iterable[torch.nn.Module]) -> list[torch.nn.Module]:
    """Give the fused layers among ``layers`` (``fuse_lora_layers``' result, or a model's ``modules()``) PEFT's own
    class back; returns them."""
    fused = [layer for layer in layers if type(layer).forward is _forward]
    for layer in fused:
        layer.__class__ = type(layer).__bases__[0]
    return fused
