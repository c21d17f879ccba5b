"""On CPU, a training forward pass hands SDPA its attention mask as floats, converted once for every layer.

transformers builds one boolean 4D mask a forward pass (padded rows, or packed rows' block diagonal) and hands it to
every layer's attention. PyTorch's SDPA turns a boolean mask into an additive one (0 where attended, -inf where not,
in the query's dtype) at every call, and keeps that copy for backward: one [rows, 1, tokens, tokens] float tensor
per layer where one would serve them all. For SmolLM2 at 8 rows of 256 tokens that is 30 copies of 2 MiB; at 1,024
tokens, 32 MiB each.

``share_cpu_attention_mask`` makes the same conversion once per mask and forward pass, before the first layer's
attention, and hands every layer the float mask; SDPA keeps that one tensor. SDPA computes with the same values,
so the loss and every gradient are bit-identical (tests). Only training passes on CPU in fp32 (train mode,
gradients on, no CPU autocast), and not under gradient checkpointing (``build``); validation, evaluation and
generation keep transformers' own path.
"""

from __future__ import annotations

import torch
from torch.utils.hooks import RemovableHandle
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["share_cpu_attention_mask"]


class _Masks:
    """The float mask made for each boolean mask still alive. Held by the boolean mask's identity and only as long as
    that mask lives (``torch.utils.weak.WeakIdKeyDictionary``): transformers builds it inside the forward pass and
    drops it at the end, so nothing is held here between passes (backward keeps the float mask it needs)."""

    def __init__(self) -> None:
        self.converted: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def attention(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        mask, hidden = kwargs.get("attention_mask"), kwargs.get("hidden_states", args[0] if args else None)
        if not (module.training and torch.is_grad_enabled()) or torch.is_autocast_enabled("cpu"):
            return None
        if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.ndim == 4):
            return None
        if not (isinstance(hidden, torch.Tensor) and hidden.dtype == torch.float32 and mask.device == hidden.device):
            return None
        if (additive := self.converted.get(mask)) is None:
            additive = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device)
            additive.masked_fill_(mask.logical_not(), float("-inf"))
            self.converted[mask] = additive
        return args, {**kwargs, "attention_mask": additive}


def share_cpu_attention_mask(model: torch.nn.Module, device: torch.device) -> list[RemovableHandle]:
    """Install the conversion on ``model`` (a causal LM using SDPA) when it trains on CPU; returns the handles, one on
    every decoder layer's attention (``self_attn``)."""
    config = getattr(model, "config", None)
    if torch.device(device).type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        return []
    masks = _Masks()
    handles = []
    for layer in model.modules():
        attention = getattr(layer, "self_attn", None)
        if isinstance(attention, torch.nn.Module):
            handles.append(attention.register_forward_pre_hook(masks.attention, with_kwargs=True))
    return handles
