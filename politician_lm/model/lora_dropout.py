"""LoRA dropout without a dropped-out copy of every adapted layer's input kept for backward.

PEFT computes a LoRA layer as ``lora_B(lora_A(dropout(x)))``. With a dropout above 0, autograd keeps, for every
adapted layer, the dropped-out input (``lora_A``'s weight gradient needs it) and the dropout's own mask (on CPU a
float tensor of 0 and 1/(1-p), as wide as the input): 8 bytes an element in fp32 where 0 would be kept without
dropout, since the layer's input is kept anyway where ``lora_A`` reads it undropped, and q, k and v (gate and up)
read one input. On SmolLM2 (8 x 256 tokens, NF4) a dropout of 0.05 took the peak RSS from 5.2 to 7.3 GB.

``lean_lora_dropout`` moves the dropout into ``lora_A`` (PEFT's dropout module becomes an identity; the weights, their
names and the saved adapter are unchanged) and, while ``lora_A`` runs, keeps instead of those two tensors a boolean
mask (1 byte an element) and a reference to the input, recomputing the dropped-out input and the float mask when
backward asks for them. The same functions run in the same order (``F.dropout``, then ``F.linear``), so the random
draws, the forward values and every gradient are those of PEFT's layer, bit for bit; each substitution is checked
once for each device, dtype and autocast setting against the tensor it stands for (``torch.equal``), and where they
differ the tensor is kept as before. Not under gradient checkpointing, whose own saved-tensor hooks must see every
save (and which keeps none of them anyway), nor for LoRA variants (DoRA) that read the dropped-out input themselves.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from politician_lm.model.recompute import Recipe, outer_hooks, pass_on, unpack_saved

__all__ = ["DroppingLinear", "lean_lora_dropout"]

_FUSED = frozenset({"cuda", "xpu", "lazy", "privateuseone"})  # where ATen's dropout is native_dropout (a bool mask)
_EXACT: dict[tuple, bool] = {}  # (kind, device type, dtype, autocast dtype) -> the recomputation is bit-identical


class DroppingLinear(torch.nn.Linear):
    """``lora_A`` with the LoRA dropout inside: ``F.linear(F.dropout(x, p), W)`` keeping a mask, not the copies."""

    dropout_p: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.dropout_p
        if not (self.training and torch.is_grad_enabled() and 0 < p < 1):
            return F.linear(F.dropout(x, p, self.training), self.weight, self.bias)
        return _Lean(x, p).run(self.weight, self.bias)


class _Lean:
    """The saved-tensor hooks of one ``DroppingLinear`` call. Hooks already active outside it (``model.recompute``'s,
    which keep a norm's output as a recipe) still see every tensor it does not replace, and the input it keeps
    (``recompute.pass_on``)."""

    def __init__(self, x: torch.Tensor, p: float) -> None:
        self.x, self.p, self.mask, self.noise_dtype, self.in_linear = x, p, None, None, False
        self.outer = outer_hooks()

    def run(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Autograd keeps ``pack`` with what it packed (and so this object): it must hold no tensor of its own."""
        with torch.autograd.graph.saved_tensors_hooks(self.pack, unpack_saved):
            dropped = F.dropout(self.x, self.p, True)
            self.in_linear = True
            return F.linear(dropped, weight, bias)

    def pack(self, t: torch.Tensor) -> Any:
        if not self.in_linear:  # inside F.dropout: its mask (CUDA: boolean; CPU: floats 0 and 1/(1-p))
            if t.dtype == torch.bool and t.shape == self.x.shape:
                self.mask = t
            elif t.is_floating_point() and t.shape == self.x.shape:
                mask = t != 0
                if (recipe := self._substitute("noise", t, partial(_noise, mask, t.dtype, self.p))) is not None:
                    self.mask, self.noise_dtype = mask, t.dtype
                    return recipe
        elif t.numel() == self.x.numel() and t.is_floating_point():  # lora_A's input: the dropped-out x
            if self.mask is None:  # x wants no gradient, so F.dropout kept no mask: where t is 0 (x * 0 or x == 0)
                self.mask = (t != 0).reshape(self.x.shape)
                self.noise_dtype = None if self.x.device.type in _FUSED else self.x.dtype
            x = pass_on(self.outer, self.x)  # t's shape: matmul saves x folded to 2D
            make = partial(_dropped, x, self.mask, self.noise_dtype, self.p, t.dtype, t.shape)
            if (recipe := self._substitute("dropped", t, make)) is not None:
                return recipe
        return pass_on(self.outer, t)

    def _substitute(self, kind: str, t: torch.Tensor, make: Any) -> Recipe | None:
        """A recipe of ``make`` in place of ``t`` where it rebuilds ``t`` exactly (checked once per kind of tensor);
        None where it does not."""
        recipe = Recipe(make)
        key = (kind, t.device.type, t.dtype, self.x.dtype, _autocast_dtype(t.device))
        if key not in _EXACT:  # rebuilt without a gradient: nothing recorded, nothing saved (no pack inside pack)
            _EXACT[key] = torch.equal(recipe.rebuild(), t)
        return recipe if _EXACT[key] else None


def _noise(mask: torch.Tensor, dtype: torch.dtype, p: float) -> torch.Tensor:
    """ATen's CPU dropout noise: bernoulli(1 - p) as ``mask``, then divided by 1 - p."""
    return mask.to(dtype).div_(1 - p)


def _dropped(
    x: Any, mask: torch.Tensor, noise_dtype: torch.dtype | None, p: float, dtype: torch.dtype, shape: torch.Size
) -> torch.Tensor:
    """The dropped-out input from ``x`` (as ``pass_on`` kept it) and the boolean mask, in ``shape``."""
    x = unpack_saved(x)
    if noise_dtype is not None:  # CPU: x * noise
        dropped = x * _noise(mask, noise_dtype, p)
    else:  # CUDA's fused dropout: x * mask * 1/(1-p)
        dropped = torch.ops.aten.native_dropout_backward(x, mask, 1.0 / (1 - p))
    return dropped.to(dtype).reshape(shape)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def lean_lora_dropout(model: Any) -> int:
    """Give every vanilla LoRA layer of ``model`` with a dropout in (0, 1) a ``DroppingLinear`` ``lora_A`` (the
    same module, its class changed) and an identity dropout; returns how many adapters changed."""
    changed = 0
    for module in model.modules():
        drops, as_, variants = (getattr(module, n, None) for n in ("lora_dropout", "lora_A", "lora_variant"))
        if not isinstance(drops, torch.nn.ModuleDict) or not isinstance(as_, torch.nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            a = as_[name] if name in as_ else None
            if type(drop) is not torch.nn.Dropout or type(a) is not torch.nn.Linear or name in (variants or {}):
                continue
            if 0 < drop.p < 1:
                a.__class__, a.dropout_p = DroppingLinear, float(drop.p)
                drops[name] = torch.nn.Identity()
                changed += 1
    return changed
