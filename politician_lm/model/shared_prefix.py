"""Training and validation rows that start alike run their common start once.

A persona's rows begin with the same system prompt and chat template: on the demo's data 87 tokens of a row's 187 on
average, 45% of every batch's tokens. No labelled token lies in it (only completions are scored), and a causal model
computes the same keys and values for it in every row. So the backbone runs it once, as a batch of one, keeps its
keys and values, repeats them for every row (autograd sums the rows' gradients back into the one copy) and runs each
row's rest after them. The loss and the gradients are those of the whole rows, to fp32 rounding (tests).

Only where that is exact in law, not just on average: right-padded or unpadded rows (every row's tokens keep their
columns and positions), no dropout drawing in train mode (each row would draw its own mask over the prefix), no
gradient checkpointing (transformers turns the cache off under it), SDPA or eager attention, and a model whose
cache can be repeated. The production recipes (``configs/biden.yaml``: LoRA dropout 0.05 and gradient checkpointing)
run every row whole; the CPU recipes (no dropout) share.
"""

from __future__ import annotations

import torch

from politician_lm.model.decoding import MIN_SHARED_PREFIX, repeated_prefix_cache, shared_prefix_length


def unscored_prefix(ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> int:
    """Leading tokens every right-padded row shares and none of whose positions is scored (``keep[:, t]`` marks
    the positions that predict a labelled token); 0 when too short to be worth a second forward call."""
    if len(ids) < 2:
        return 0
    scored = keep.any(0).nonzero()
    shared = min(shared_prefix_length(ids, mask), int(scored[0]) if len(scored) else 0)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def draws_dropout(model: torch.nn.Module) -> bool:
    """Whether ``model`` in train mode drops anything: a dropout module or LoRA dropout above 0, or an attention or
    hidden dropout in its config (applied functionally). Read once per model; the settings do not change in a fit."""
    key = "_politician_lm_draws_dropout"
    if key not in model.__dict__:
        modules = any(
            (isinstance(m, torch.nn.Dropout) and m.p > 0) or getattr(m, "dropout_p", 0) > 0 for m in model.modules()
        )
        config = getattr(model, "config", None)
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        settings = vars(config) if config is not None else {}
        functional = any(
            ("dropout" in k or "pdrop" in k) and isinstance(v, float) and v > 0 for k, v in settings.items()
        )
        model.__dict__[key] = modules or functional
    return model.__dict__[key]


def shareable(model: torch.nn.Module, backbone: torch.nn.Module, batch: dict[str, torch.Tensor]) -> bool:
    """Whether ``batch`` may run its common prefix once through ``backbone`` (see the module's docstring)."""
    mask = batch.get("attention_mask")
    if "position_ids" in batch or mask is None or len(mask) < 2 or not bool(mask[:, 0].all()):
        return False  # packed rows, no mask (no way to tell padding), one row, or left padding
    if getattr(backbone, "gradient_checkpointing", False) and backbone.training:
        return False
    if getattr(getattr(backbone, "config", None), "_attn_implementation", None) not in ("sdpa", "eager"):
        return False  # FlashAttention's right-padded rows after a cache: not run here (no GPU) so not relied on
    return not (model.training and draws_dropout(model))


def prefix_shared_hidden(
    model: torch.nn.Module, backbone: torch.nn.Module, batch: dict[str, torch.Tensor], keep: torch.Tensor
) -> torch.Tensor | None:
    """``backbone``'s last hidden states at the positions ``keep`` marks (``[rows, length - 1]``, row-major), with
    the rows' common unscored prefix run once; None where it cannot be (then the caller runs the whole rows)."""
    if not shareable(model, backbone, batch):
        return None
    ids, mask = batch["input_ids"], batch["attention_mask"]
    shared = unscored_prefix(ids, mask, keep)
    if not shared:
        return None
    cache = repeated_prefix_cache(backbone, ids, mask, shared)
    if not cache:
        return None
    hidden = backbone(input_ids=ids[:, shared:], attention_mask=mask, use_cache=True, **cache).last_hidden_state
    return hidden[:, :-1][keep[:, shared:]]
