"""One batched generation call for every caller: ``Persona.generate`` (generate, chat, evaluate, serve, pairs) and
``PoliticianLM.predict_step``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from politician_lm.model.kv_cache import growing

MIN_SHARED_PREFIX = 8  # tokens; below this the one-row prefill is not worth a second forward call


@torch.no_grad()
def generate_new_text(
    model: Any,
    tokenizer: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    streamer: Any = None,
    share_prefix: bool = True,
    **settings: Any,
) -> list[str]:
    """Generate from a left-padded batch with the KV cache and decode only the new tokens of each row.

    Prompts that start alike (a persona's system prompt and chat template: 83 of 102 tokens on the demo's prompts)
    share their prefix's keys and values: the prefix runs once as a batch of one, its cache is repeated for every
    row, and each row's padding moves between the prefix and the rest of its prompt (masked; position ids come from
    the mask, so every token keeps its position). Same computation per row, a fraction of the prompt's cost.
    ``share_prefix=False`` runs every row's whole prompt (for comparison).
    """
    width = input_ids.shape[1]
    kwargs: dict[str, Any] = {}
    shared = shared_prefix_length(input_ids, attention_mask)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if share_prefix and shared >= MIN_SHARED_PREFIX and input_ids.shape[0] > 1:
        input_ids, attention_mask = move_padding_after_prefix(input_ids, attention_mask, shared)
        # the decoder alone (LoRA layers sit inside it): the prefix needs keys and values, not logits
        body = base.get_decoder() if hasattr(base, "get_decoder") else model
        kwargs = repeated_prefix_cache(body, input_ids, attention_mask, shared)
    # a fresh cache that grows in place, unless the model keeps its own kind of cache (transformers' own check) or
    # beam search will reorder the rows (then generate's cache is as good)
    dynamic = getattr(base, "_supports_default_dynamic_cache", lambda: True)()
    if not kwargs and dynamic and settings.get("num_beams", 1) == 1:
        kwargs = {cache_keyword(base): DynamicCache(config=base.config)}
    for cache in kwargs.values():
        growing(cache)  # decoding appends in place instead of copying the whole cache every step
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        **kwargs,
        **settings,
    )
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def cache_keyword(model: Any) -> str:
    """The keyword ``model``'s forward takes its key/value cache by: transformers renamed ``past_key_values`` to
    ``cache`` (5.2x), and the model's own signature says which."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def repeated_prefix_cache(
    body: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: int
) -> dict[str, Any]:
    """The keys and values of the first row's ``shared`` leading tokens (run once, as a batch of one), repeated for
    every row of ``input_ids``, as the keyword argument the model takes them by; ``{}`` where the cache cannot be
    repeated (then every row runs whole). Used by generation and by ``Persona.completion_losses``."""
    prefix = body(input_ids=input_ids[:1, :shared], attention_mask=attention_mask[:1, :shared], use_cache=True)
    # transformers renamed past_key_values to cache (5.2x); the output's field says which name the model takes
    name = "cache" if "cache" in prefix else "past_key_values"
    cache = prefix[name]
    if not hasattr(cache, "batch_repeat_interleave"):
        return {}
    cache.batch_repeat_interleave(input_ids.shape[0])
    return {name: cache}


class CarriedPrefix:
    """The keys and values of the last batch's shared prefix (one row), kept for the next batch of the same call.

    ``cache`` gives a batch's prefix cache as ``repeated_prefix_cache`` does, but where the batch's prefix starts
    with at least ``MIN_SHARED_PREFIX`` tokens of the previous one, those tokens' keys and values are taken from it
    (the same tokens at the same positions, through the same model state) and only the rest of the prefix runs."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.name = "past_key_values"  # the cache's keyword, as the model's output names it

    def cache(self, body: Any, ids: torch.Tensor, mask: torch.Tensor, shared: int) -> dict[str, Any]:
        prefix = ids[0, :shared].tolist()
        # at least one token runs, so the forward pass returns the cache
        common = common_prefix_length([self.ids, prefix], min(len(self.ids), shared - 1))
        if common < MIN_SHARED_PREFIX or not self.layers:
            out = repeated_prefix_cache(body, ids[:, :shared], mask[:, :shared], shared)
            if not out:
                return {}
            ((self.name, cache),) = out.items()  # repeated for every row in place: row 0 is the prefix's own
            self.ids, self.layers = prefix, [(layer.keys[:1], layer.values[:1]) for layer in cache.layers]
            return out
        head = _cache_of(self.layers, common)
        body(input_ids=ids[:1, common:shared], attention_mask=mask[:1, :shared], use_cache=True, **{self.name: head})
        self.ids, self.layers = prefix, [(layer.keys, layer.values) for layer in head.layers]
        head.batch_repeat_interleave(ids.shape[0])
        return {self.name: head}


def _cache_of(layers: list[tuple[torch.Tensor, torch.Tensor]], tokens: int) -> DynamicCache:
    """A one-row cache holding the first ``tokens`` keys and values of each layer in ``layers``."""
    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k[:, :, :tokens], v[:, :, :tokens], i)
    return cache


def common_prefix_length(seqs: Sequence[Sequence[int]], cap: int) -> int:
    """How many leading tokens every sequence of ``seqs`` shares, at most ``cap`` (none of them shorter)."""
    n = 0
    while n < cap and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading real tokens every left-padded row has in common, leaving each row at least one token."""
    rows = [ids[mask.bool()] for ids, mask in zip(input_ids, attention_mask)]
    shortest = min(len(r) for r in rows)
    if shortest <= 1:
        return 0
    same = torch.stack([r[: shortest - 1] for r in rows]) == rows[0][: shortest - 1]
    differs = (~same.all(0)).nonzero()
    return int(differs[0]) if len(differs) else shortest - 1


def move_padding_after_prefix(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows -> ``[prefix][padding][rest of the prompt]``, same width, so the prefix columns line up."""
    ids, mask = input_ids.clone(), attention_mask.clone()
    for i, row_mask in enumerate(attention_mask):
        pads = int((row_mask == 0).sum())
        if pads == 0:
            continue
        real = input_ids[i, pads:]
        ids[i] = torch.cat([real[:shared], input_ids[i, :pads], real[shared:]])
        mask[i] = torch.cat(
            [row_mask.new_ones(shared), row_mask.new_zeros(pads), row_mask.new_ones(len(real) - shared)]
        )
    return ids, mask
