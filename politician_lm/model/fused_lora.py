"""At inference on CPU, a LoRA layer adds its update into the base layer's output with one matrix product.

PEFT computes an active adapter as ``result = result + lora_B(lora_A(dropout(x))) * scaling``: ``lora_B`` makes a
new tensor as wide as the layer's output, ``* scaling`` a second, ``+`` a third. With SmolLM2's seven adapted
projections in each of 30 layers that is 630 full-width temporaries a forward pass, and on a 2-core CPU, where
those passes over memory cost as much as the narrow products themselves, the adapter arm of ``evaluate`` ran its
stance probe 23% slower than the same model with the adapter off (``docs/performance.md``).

``FusedLoraLinear.forward`` computes the same sum as ``result.addmm_(lora_A(x), lora_B.weight.T, alpha=scaling)``:
BLAS adds ``scaling * (lora_A(x) @ lora_B.weight.T)`` into the base layer's output in place, with no temporary.
The value is PEFT's to float32 rounding (the scale is applied inside the product instead of after it), not bit for
bit. It applies only without gradients, in eval mode, to float32 CPU tensors, to vanilla LoRA without a bias on
``lora_B`` and without PEFT's per-row ``adapter_names``; every other call runs PEFT's own forward.
``fuse_lora_layers`` swaps the class of every PEFT LoRA ``Linear`` (``unfuse_lora_layers`` swaps it back); the
module's weights, names and state dict are unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = ["fuse_lora_layers", "fused_class", "unfuse_lora_layers"]


def _peft_linear() -> type:
    from peft.tuners.lora.layer import Linear

    return Linear


def _fusable(layer: Any, x: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> bool:
    return not (
        args
        or kwargs
        or layer.training
        or layer.disable_adapters
        or layer.merged
        or torch.is_grad_enabled()
        or x.dtype != torch.float32
        or x.device.type != "cpu"
        or any(a in layer.lora_variant for a in layer.active_adapters)  # DoRA and the other variants
    )


def _forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    peft_forward = _peft_linear().forward
    if not _fusable(self, x, args, kwargs):
        return peft_forward(self, x, *args, **kwargs)
    adapters = [name for name in self.active_adapters if name in self.lora_A]
    pairs = [(self.lora_A[name], self.lora_B[name]) for name in adapters]
    if any(a.weight.dtype != torch.float32 or b.weight.dtype != torch.float32 or b.bias is not None for a, b in pairs):
        return peft_forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    if result.dtype != torch.float32 or not result.is_contiguous():
        return peft_forward(self, x, *args, **kwargs)
    flat, rows = result.view(-1, result.shape[-1]), x.reshape(-1, x.shape[-1])
    for name, (a, b) in zip(adapters, pairs):
        flat.addmm_(a(self.lora_dropout[name](rows)), b.weight.t(), alpha=self.scaling[name])
    return result


@functools.cache
def fused_class() -> type:
    """``FusedLoraLinear``: PEFT's LoRA ``Linear`` with the forward above (made at first use: PEFT loads lazily)."""
    return type("FusedLoraLinear", (_peft_linear(),), {"forward": _forward, "__module__": __name__})


def fuse_lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Make every PEFT LoRA ``Linear`` of ``model`` (exactly that class) a ``FusedLoraLinear``; returns them."""
    try:
        base = _peft_linear()
    except ImportError:
        return []
    layers = [m for m in model.modules() if type(m) is base]
    fused = fused_class()
    for layer in layers:
        layer.__class__ = fused
    return layers


def unfuse_lora_layers(layers: list[torch.nn.Module]) -> None:
    """Make ``layers`` (``fuse_lora_layers``' result) PEFT's own LoRA ``Linear`` again."""
    base = _peft_linear() if layers else None
    for layer in layers:
        layer.__class__ = base
