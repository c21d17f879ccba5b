"""Per-row LoRA adapters in one mixed batch, at the cost of one adapter.

PEFT's mixed-batch LoRA (``adapter_names=``) runs, in every LoRA layer and for every adapter present, a gather of
that adapter's rows, its two small matrix products and a scatter back: with two personas, four products and four
index operations per layer, and its Python loops over the rows, at every decoding step. ``RowAdapters`` computes the
same sum in two products for any number of adapters: the adapters' ``A`` matrices stacked into one, so ``x @ A``
gives every adapter's low-rank features for every row; a 0/1 mask keeps each row's own adapter's block (and none
for a base row); the stacked ``B`` maps the features back, and each row is scaled by its adapter's ``scaling``, in
the order PEFT computes it (``(x @ A) @ B * scaling``). The masked-out features are exact zeros, so a row gets its
own adapter's update alone; only the products' shapes differ from PEFT's, which can move the last bits of a float
(the serve tests and the load test compare every greedy answer with ``generate``'s, token for token).

Layers it does not cover keep PEFT's own mixed-batch forward, given the row names by a hook: any LoRA variant (DoRA,
aLoRA), a trained LoRA bias, dropout in training mode, a merged adapter, a base layer that is not ``nn.Linear``, and
PEFT's other wrappers (``modules_to_save``, trainable tokens). ``rehook`` after adapters are added or deleted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["RowAdapters"]


class _Stack:
    """One LoRA layer's adapters, stacked: ``A`` is [sum of ranks, in], ``B`` [out, sum of ranks]."""

    def __init__(self, layer: Any) -> None:
        self.names = tuple(n for n in layer.lora_A if n in layer.lora_B)
        self.ranks = [layer.lora_A[n].weight.shape[0] for n in self.names]
        self.scaling = [float(layer.scaling[n]) for n in self.names]
        self.A = torch.cat([layer.lora_A[n].weight for n in self.names]).detach()
        self.B = torch.cat([layer.lora_B[n].weight for n in self.names], dim=1).detach()


def _fusable(layer: Any) -> bool:
    from peft.tuners.lora import Linear

    return (
        isinstance(layer, Linear)  # PEFT's, or model.fused_lora's subclass of it
        and isinstance(layer.get_base_layer(), nn.Linear)
        and not layer.merged
        and not layer.fan_in_fan_out
        and not getattr(layer, "lora_variant", None)
        and not any(getattr(layer, "lora_bias", {}).values())
        and all(isinstance(d, nn.Identity) or not d.training for d in layer.lora_dropout.values())
        and bool(layer.lora_A)
    )


class RowAdapters:
    """Each row of a forward pass names its adapter (``names``, PEFT's ``__base__`` for none); set it before the
    forward and back to None after. With ``names`` None every layer is PEFT's own. ``stacked=False`` gives every
    layer PEFT's own mixed batch (what ``scripts/bench_serve_step.py`` compares against)."""

    def __init__(self, model: Any, stacked: bool = True) -> None:
        self.model, self.stacked, self.handles, self.stacks = model, stacked, [], {}
        self._names: list[str] | None = None
        self._plans: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor] | None] = {}
        self.rehook()

    @property
    def names(self) -> list[str] | None:
        return self._names

    @names.setter
    def names(self, names: list[str] | None) -> None:
        self._names, self._plans = names, {}

    def release(self) -> None:
        """Give every layer back its own forward."""
        for handle in self.handles:
            handle.remove()
        for layer in self.stacks:
            layer.__dict__.pop("forward", None)
        self.handles, self.stacks = [], {}

    def rehook(self) -> None:
        """(Re)build the stacks from the adapters the model holds now."""
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        self.release()
        for module in self.model.modules():
            if self.stacked and isinstance(module, LoraLayer) and _fusable(module):
                self.stacks[module] = _Stack(module)
                module.forward = self._forward_of(module)
            elif isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper)):
                self.handles.append(module.register_forward_pre_hook(self._hook, with_kwargs=True))

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self._names is not None:
            kwargs["adapter_names"] = self._names
        return args, kwargs

    def _plan(self, stack: _Stack) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rows' mask over the stacked features [rows, sum of ranks] and scaling [rows, 1] (None: no row uses an
        adapter of this layer). Shared by every layer with the same adapters, once per forward pass."""
        if stack.names not in self._plans:
            names = self._names
            mask = stack.A.new_zeros(len(names), sum(stack.ranks))
            scale = stack.A.new_zeros(len(names), 1)
            start, used = 0, False
            for name, rank, scaling in zip(stack.names, stack.ranks, stack.scaling):
                rows = [i for i, n in enumerate(names) if n == name]
                if rows:
                    mask[rows, start : start + rank] = 1.0
                    scale[rows] = scaling
                    used = True
                start += rank
            self._plans[stack.names] = (mask, scale) if used else None
        return self._plans[stack.names]

    def _forward_of(self, layer: Any) -> Any:
        own = type(layer).forward
        stack = self.stacks[layer]

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self._names is None or layer.disable_adapters:
                return own(layer, x, *args, **kwargs)
            result = layer.base_layer(x, *args, **kwargs)
            plan = self._plan(stack)
            if plan is None:
                return result
            mask, scale = plan
            features = nn.functional.linear(x.to(stack.A.dtype), stack.A)  # [rows, (tokens,) sum of ranks]
            shape = (mask.shape[0],) + (1,) * (features.dim() - 2) + (mask.shape[1],)
            update = nn.functional.linear(features * mask.view(shape), stack.B) * scale.view(shape[:-1] + (1,))
            return result + update.to(result.dtype)

        return forward
