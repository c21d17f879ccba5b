"""Several LoRA adapters on one base model: their names, weights, shared base, attaching, activating and merging.

``load_persona`` (generate, chat, evaluate, pairs) and ``serve`` hold adapters side by side on one PEFT model,
each LoRA update scaled by its weight at run time, nothing merged unless asked. The names under which they are
attached are a contract between those callers (``evaluate`` switches to one adapter by name, ``serve`` to one
persona's set), so they are made here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

# the checks that read no weights live beside the adapter reader, so evaluate runs them before torch loads
from politician_lm.artifacts.adapter import check_fit, check_one_base
from politician_lm.errors import UserError
from politician_lm.values import parse_weights

__all__ = [
    "activate",
    "adapter_names",
    "adapter_weights",
    "attach_adapter",
    "attach_weighted",
    "bake_weight",
    "check_fit",
    "check_one_base",
    "fold_weighted",
    "merge_weighted",
    "set_weights",
]


def attach_adapter(model: Any, folder: str | Path, adapter_name: str = "default", is_trainable: bool = False) -> Any:
    """Load the adapter in ``folder`` onto ``model`` (a base model, or a PeftModel that gets one more adapter).

    PEFT's loading errors (tensor shapes that do not fit this base, unknown modules) become one-line
    ``UserError``s naming the folder.
    """
    from peft import PeftModel

    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(folder), adapter_name=adapter_name, is_trainable=is_trainable)
            return model
        return PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name, is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:  # TypeError: a config value PEFT does not take
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "size mismatch" in str(e):
            first = "its tensor shapes do not fit this base model"
        raise UserError(f"{folder}: adapter does not load onto the base model ({first[:200]})") from None


def adapter_names(count: int, prefix: str = "adapter") -> list[str]:
    """The names ``count`` adapters are attached under: ``adapter_0``, ``adapter_1``, ... (``load_persona``'s, so
    ``adapter_names(n)[i]`` is the i-th adapter given); another ``prefix`` keeps a second persona's set apart."""
    return [f"{prefix}_{i}" for i in range(count)]


def adapter_weights(weights: list[float] | str | None, count: int) -> list[float]:
    """One weight per adapter (1 each by default); negative weights are allowed (they subtract an update)."""
    return parse_weights(weights, count, allow_negative=True) if weights is not None else [1.0] * count


def set_weights(model: Any, names: Sequence[str], weights: Sequence[float]) -> None:
    """Scale each named adapter's LoRA update by its weight, in every LoRA layer that holds it."""
    for module in model.modules():
        if hasattr(module, "set_scale") and hasattr(module, "lora_A"):
            for name, weight in zip(names, weights):
                if name in module.lora_A:
                    module.set_scale(name, weight)


def attach_weighted(
    model: Any, paths: Sequence[str | Path], weights: Sequence[float], names: Sequence[str] | None = None
) -> Any:
    """``model`` (a base, or a PEFT model that gets more adapters) with the adapters in ``paths`` attached under
    ``names`` (default ``adapter_names``) and scaled by ``weights``; which adapters are active is left as it was."""
    names = list(names) if names is not None else adapter_names(len(paths))
    for name, path in zip(names, paths):
        model = attach_adapter(model, path, adapter_name=name)
    set_weights(model, names, weights)
    return model


def activate(model: Any, names: str | Sequence[str]) -> None:
    """Make ``names`` the active adapters of a PEFT model: their (weighted) updates add up, the others are off."""
    model.base_model.set_adapter(names if isinstance(names, str) else list(names))


def merge_weighted(model: Any, names: Sequence[str]) -> Any:
    """Fold the named adapters' weighted updates into the base weights where those are plain fp32 ``nn.Linear``
    (each generated token then skips the adapters' matmuls); quantized or half-precision bases are never merged
    into, since that would round the update, and the PEFT model is returned unchanged."""
    bases = [m.base_layer for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    fp32 = bool(bases) and all(type(b) is torch.nn.Linear and b.weight.dtype == torch.float32 for b in bases)
    return model.merge_and_unload(adapter_names=list(names)) if fp32 else model


def fold_weighted(model: Any, names: Sequence[str], into: str) -> None:
    """Fold the named (already weighted) adapters into one adapter ``into`` by PEFT's exact ``cat`` combination
    (ranks stacked, update = the sum of the weighted updates, to float rounding; as ``merge`` does) and delete the
    sources, so a persona made of several adapters is one adapter that a row of a mixed batch can name."""
    if any(getattr(model.peft_config[n], "use_dora", False) for n in names):
        raise UserError(f"{into}: DoRA adapters cannot be folded into one; serve them one persona each")
    model.add_weighted_adapter(list(names), [1.0] * len(names), into, combination_type="cat")
    model.peft_config[into].use_rslora = False  # the sources' scales are in the stacked A: the update applies at 1
    for module in model.modules():
        if isinstance(scaling := getattr(module, "scaling", None), dict) and into in scaling:
            scaling[into] = 1.0
    for name in names:
        model.delete_adapter(name)


def bake_weight(model: Any, name: str) -> None:
    """Move adapter ``name``'s scale (its weight x alpha / r, or / sqrt(r) with rsLoRA) into its A matrices, as
    ``fold_weighted`` leaves a folded adapter: the update applies at scale 1, and the adapter's config says so
    (alpha = r, no rsLoRA), so saved it applies its weighted update alone, in PEFT or vLLM. (PEFT's
    ``add_weighted_adapter`` combines a single adapter by its ``linear`` method, a square root of the scale on A and
    on B, which a negative weight has not.)"""
    for module in model.modules():
        scaling = getattr(module, "scaling", None)
        if not isinstance(scaling, dict) or name not in scaling:
            continue
        if name in getattr(module, "lora_A", {}):
            module.lora_A[name].weight.data *= scaling[name]
        elif name in getattr(module, "lora_embedding_A", {}):
            module.lora_embedding_A[name].data *= scaling[name]
        scaling[name] = 1.0
    config = model.peft_config[name]
    config.lora_alpha, config.use_rslora = config.r, False
    config.alpha_pattern = dict(config.rank_pattern or {})  # per-module alpha = that module's rank: scale 1 there too
