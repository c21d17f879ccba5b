"""The gated MLP's activation without the tensor autograd would keep for it.

A Llama-style MLP computes ``down(silu(gate(x)) * up(x))``. Autograd keeps four [tokens, intermediate] tensors of it
for backward: ``gate(x)`` (silu's gradient), ``silu(gate(x))`` and ``up(x)`` (the product's) and the product
(``down``'s LoRA and input gradients). ``silu(gate(x))`` is one cheap elementwise op away from ``gate(x)``, so
``silu_mul`` keeps ``gate(x)`` and ``up(x)`` only and recomputes it in backward. For SmolLM2 (intermediate 1,536,
hidden 576) that is 360 of the 2,368 MiB a training step of 8 x 256 tokens keeps (15%); for a 7B Mistral
(14,336 and 4,096) about a sixth as well.

``down``'s LoRA keeps the product for its weight gradient; with ``recompute_product`` the MLP keeps it as ``gate(x)``
and ``up(x)`` (kept anyway) and recomputes it when backward reads it: another 364 MiB of the step above.

Values and gradients are bit-identical to autograd's: the forward runs the same two ops, and backward the same aten
kernels (``silu_backward`` and ``mul``) on the same values. ``fuse_gated_mlps`` gives the MLPs whose forward is
exactly that expression (the transformers classes named in ``GATED_MLPS``, with a SiLU activation) this forward.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from politician_lm.model.recompute import recompute_saves

__all__ = ["GATED_MLPS", "fuse_gated_mlps", "silu_mul"]

# transformers MLP classes whose forward is ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``
GATED_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "Olmo2MLP", "GraniteMLP", "GemmaMLP"})


class _SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gate, up = ctx.saved_tensors
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
        grad_up = grad * F.silu(gate) if ctx.needs_input_grad[1] else None
        return grad_gate, grad_up


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``, keeping only ``gate`` and ``up`` for backward when a gradient is wanted."""
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return _SiluMul.apply(gate, up)
    return F.silu(gate) * up


def _forward(self: nn.Module, x: torch.Tensor, recompute_product: bool = False) -> torch.Tensor:
    gate = self.gate_proj(x)  # before up_proj, as the original: a LoRA dropout draws its masks in this order
    up = self.up_proj(x)
    product = silu_mul(gate, up)
    if not recompute_product:
        return self.down_proj(product)
    # down_proj's LoRA would keep the product; backward rebuilds it with silu_mul's own ops (the recipe runs without
    # a gradient, so silu_mul takes its plain path): the same values, bit for bit
    with recompute_saves(product, partial(silu_mul, gate, up)):
        return self.down_proj(product)


def _is_silu(act: Any) -> bool:
    return isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"


def fuse_gated_mlps(model: nn.Module, recompute_product: bool = False) -> int:
    """Give every gated SiLU MLP of ``model`` the forward above; returns how many were changed.

    ``recompute_product``: down_proj's LoRA keeps its input (the product) for its weight gradient; recompute it in
    backward from ``gate(x)`` and ``up(x)`` instead. Leave it off under gradient checkpointing, whose own hooks would
    otherwise be bypassed inside down_proj (the layer's ``gate(x)`` and ``up(x)`` would then stay alive)."""
    changed = 0
    for module in model.modules():
        if type(module).__name__ in GATED_MLPS and _is_silu(getattr(module, "act_fn", None)):
            # unlike a bound method, a partial pickles
            module.forward = partial(_forward, module, recompute_product=recompute_product)
            changed += 1
    return changed
