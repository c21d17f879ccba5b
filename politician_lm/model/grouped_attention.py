"""On CPU, a training forward pass hands grouped keys and values to SDPA as they are, without repeated copies.

In a model with grouped-query attention (SmolLM2: 9 query heads, 3 key/value heads; Llama 3 and Mistral alike),
transformers' SDPA path repeats every key and value head for its group of query heads whenever the batch has an
attention mask (every padded or packed training batch), and SDPA keeps those copies for backward: for SmolLM2 two
[tokens, 576] tensors per layer where [tokens, 192] would do, about a tenth of what a training step keeps. On CUDA
the copies are needed (SDPA's fused kernels take no mask with grouped heads). PyTorch's CPU kernels take both, and
transformers (5.23 and later) has a switch for it, ``TRANSFORMERS_SDPA_FORCE_GQA=1``, read at every attention call.

``group_cpu_attention`` sets that switch for each forward pass the model's decoder stack makes in train mode with
gradients on, and puts it back as it was afterwards (also when the pass fails). The hooks sit on the decoder stack,
not the whole model: training's loss (``scoring.Scorer``) calls the backbone and applies the head itself, and until
2026-12-06 that pass went around hooks on the model, so training kept the repeated copies after all. Validation,
evaluation and generation keep transformers' own choice, so their numbers do not move. What a SmolLM2 training
step keeps for backward (NF4 + LoRA, 8 rows of 256 tokens, four padded from 200; counted tensor by tensor, so exact):
1,566 MiB with the repeated copies, 1,386 MiB grouped (60 [8, 3, 256, 64] keys and values where there were 60
[8, 9, 256, 64]). The grouped kernel sums in another order, so losses agree to about 1e-6, not bit for bit. (The
RSS and tokens/s first recorded here, 2,285 -> 2,134 MB, were measured while the hooks sat on the whole model and
so never acted in training: not a measurement of this switch.)

An older transformers (the GPU image's 5.17, say) does not read the switch: there nothing is installed, and training
keeps the repeated copies, as it did before.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

__all__ = ["FORCE_GQA", "decoder_of", "group_cpu_attention", "transformers_reads_switch"]

FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
_UNSET = object()


class _Switch:
    """The pre-hook sets the variable for a training pass; the hook (always called) restores what was there."""

    def __init__(self) -> None:
        self.saved: list[Any] = []

    def before(self, module: torch.nn.Module, args: tuple) -> None:
        self.saved.append(os.environ.get(FORCE_GQA, _UNSET))
        if module.training and torch.is_grad_enabled():
            os.environ[FORCE_GQA] = "1"

    def after(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        previous = self.saved.pop() if self.saved else _UNSET
        if previous is _UNSET:
            os.environ.pop(FORCE_GQA, None)
        else:
            os.environ[FORCE_GQA] = previous


@functools.cache
def transformers_reads_switch() -> bool:
    """Whether the installed transformers hands SDPA grouped heads under a mask when the switch is set: asked of
    its own ``use_gqa_in_sdpa`` with a mask on CPU tensors, which without the switch says no."""
    try:
        from transformers.integrations.sdpa_attention import use_gqa_in_sdpa
    except ImportError:
        return False
    probe, previous = torch.zeros(1, 1, 1, 8), os.environ.get(FORCE_GQA)
    os.environ[FORCE_GQA] = "1"
    try:
        return bool(use_gqa_in_sdpa(torch.ones(1, 1, 1, 1, dtype=torch.bool), probe, probe))
    except TypeError:  # another signature: an unknown transformers, left as it is
        return False
    finally:
        if previous is None:
            os.environ.pop(FORCE_GQA, None)
        else:
            os.environ[FORCE_GQA] = previous


def group_cpu_attention(model: torch.nn.Module, device: torch.device) -> list[RemovableHandle]:
    """Install the switch on ``model`` when it trains on CPU with SDPA and grouped heads, and the installed
    transformers reads it; returns the handles."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if torch.device(device).type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        return []
    if not heads or kv_heads == heads or not transformers_reads_switch():  # the probe last: only where it matters
        return []
    switch, decoder = _Switch(), decoder_of(model)
    return [
        decoder.register_forward_pre_hook(switch.before),
        decoder.register_forward_hook(switch.after, always_call=True),
    ]


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack of a causal LM (``model.model`` for Llama): every forward pass goes through it, the
    model's own and ``scoring.Scorer``'s, which calls the backbone and applies the head itself."""
    inner = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return inner if isinstance(inner, torch.nn.Module) else model
