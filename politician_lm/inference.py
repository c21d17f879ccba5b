"""Load a base model with one or more adapters (weighted at run time), rebuild the training prompt, generate.

The prompt format comes from ``politician_lm.json`` saved next to every adapter, so generation renders exactly
what training rendered (plain or chat template, separator, persona system prompt, BOS rule). Several adapters
are applied together at run time, each LoRA update scaled by its weight, without merging anything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from politician_lm.artifacts.adapter import check_loadable, read_adapter, read_metadata
from politician_lm.artifacts.roles import labelled
from politician_lm.batch import IGNORE_INDEX
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import adds_bos, encode_prompt
from politician_lm.errors import UserError
from politician_lm.evaluation.stances import PROBE_ROWS
from politician_lm.model.adapters import (
    activate,
    adapter_names,
    adapter_weights,
    attach_weighted,
    merge_weighted,
)
from politician_lm.model.decoding import CarriedPrefix, generate_new_text
from politician_lm.model.fused_lora import fuse_lora_layers
from politician_lm.model.group_scoring import grouped_losses, takes_block_mask
from politician_lm.model.head_loss import logits_nll, token_nll
from politician_lm.model.loading import (
    dequantize_for_inference,
    generation_defaults,
    load_base_model,
    load_tokenizer,
    resolve_compute_dtype,
)
from politician_lm.model.packed_linear import pack_linears
from politician_lm.model.scoring import reads_positions
from politician_lm.model.shared_prefix import unscored_prefix
from politician_lm.values import parse_list


@dataclass
class Persona:
    """A ready-to-generate model: base + adapters at their weights, tokenizer, prompt style, sampling settings."""

    model: Any
    tokenizer: Any
    style: PromptStyle
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or self.tokenizer.model_max_length)

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return encode_prompt(self.tokenizer, self.style.generation_prompt(messages, self.tokenizer), self._bos)

    def __post_init__(self) -> None:
        self._bos = adds_bos(self.tokenizer)

    @torch.no_grad()
    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        streamer: Any = None,
        batch_size: int | None = None,
        on_batch: Callable[[int], Any] | None = None,
        **generation_settings: Any,
    ) -> list[str]:
        """Generate the next assistant turn for each conversation, ``batch_size`` at a time (left-padded).

        ``on_batch(1)`` is called after every batch (e.g. a progress bar's ``update``); ``generation_settings`` given
        here override the persona's ``generation`` for this call.
        """
        given = {k: v for k, v in generation_settings.items() if v is not None}  # None: the persona's own setting
        generation_settings = {**self.generation, **given}
        if not generation_settings.get("do_sample", False):  # greedy: the sampling knobs would only warn
            for key in ("temperature", "top_p", "top_k"):
                generation_settings.pop(key, None)
        size = batch_size or len(conversations)
        texts: list[str] = []
        for start in range(0, len(conversations), size):
            chunk = conversations[start : start + size]
            batch = self.tokenizer.pad(
                {"input_ids": [self.prompt_ids(c) for c in chunk]},
                padding=True,
                padding_side="left",
                return_tensors="pt",
            ).to(self.model.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            texts += generate_new_text(self.model, self.tokenizer, ids, mask, streamer=streamer, **generation_settings)
            if on_batch is not None:
                on_batch(1)
        return texts

    @torch.no_grad()
    def completion_losses(
        self,
        conversations: list[list[dict[str, str]]],
        batch_size: int = 8,
        on_batch: Callable[[int], Any] | None = None,
        share_prefix: bool = True,
        in_order: bool = False,
    ) -> list[tuple[float, int]]:
        """``(summed NLL, token count)`` of each conversation's last (assistant) turn, rendered as training renders
        it, in the order given.

        As in training, the backbone runs over each batch and the output head only on the positions that predict a
        completion token, so the prompt's and the padding's logits (rows x width x vocabulary) are never built; the
        cross-entropy is taken in fp32. Rows are batched longest first (a batch too large for memory fails at once,
        not at the end). Where the head cannot be split off the model (see ``PoliticianLM``), the model's own
        logits are used. ``on_batch(1)`` is called after every batch; without it a progress bar is shown on stderr.

        As in ``generate``, the tokens every row of a batch starts with (the chat template and the persona's system
        prompt) run once as a batch of one and their keys and values are repeated for every row; the prefix always
        ends before the first position that predicts a completion token, so every scored position is computed as
        before, from the same tokens at the same positions. ``share_prefix=False`` runs every row whole (to compare).
        Within one call the prefix's keys and values are also carried from batch to batch: a batch whose prefix
        begins with the previous batch's (the system prompt, say) runs only the tokens after the part they share.

        ``in_order=True`` batches consecutive conversations as given instead of longest first: for callers whose
        groups of ``batch_size`` rows share a long prefix (``stance_losses`` where the head cannot be split off).
        """
        encoded = self._encoded(conversations)
        order = list(range(len(encoded)))
        if not in_order:
            order.sort(key=lambda i: -len(encoded[i]["input_ids"]))  # ties keep input order
        split = _backbone_and_head(self.model)
        carried = CarriedPrefix()
        out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
        bar = None
        if on_batch is None:
            total = -(-len(order) // batch_size)
            bar = tqdm(total=total, desc="Held-out loss", unit="batch", leave=False, file=sys.stderr)
            on_batch = bar.update
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                chunk = [encoded[i] for i in rows]
                for row, loss in zip(rows, self._batch_losses(chunk, split, share_prefix, carried)):
                    out[row] = loss
                on_batch(1)
        finally:
            if bar is not None:
                bar.close()
        return out

    def _padded(self, chunk: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``chunk`` right-padded: ids, attention mask, and the next-token targets (``IGNORE_INDEX`` unscored)."""
        width, pad = max(len(e["input_ids"]) for e in chunk), self.tokenizer.pad_token_id
        ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in chunk])
        mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in chunk])
        labels = torch.tensor([e["labels"] + [IGNORE_INDEX] * (width - len(e["labels"])) for e in chunk])
        return ids, mask, labels[:, 1:]

    def _batch_losses(
        self,
        chunk: list[dict[str, Any]],
        split: tuple[torch.nn.Module, torch.nn.Module] | None,
        share_prefix: bool = True,
        carried: CarriedPrefix | None = None,
    ) -> list[tuple[float, int]]:
        """``(summed NLL, labelled token count)`` of each encoded row of one right-padded batch."""
        ids, mask, targets = self._padded(chunk)
        keep = targets != IGNORE_INDEX
        counts = keep.sum(1).tolist()
        if not any(counts):  # nothing to score (e.g. rows dropped as too long): no forward pass
            return [(0.0, 0)] * len(chunk)
        device = self.model.device
        ids, mask, keep_at, labels = ids.to(device), mask.to(device), keep.to(device), targets[keep].to(device)
        if split is None:
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep_at]
            nll = logits_nll(logits, labels)
        else:
            backbone, head = split
            shared = unscored_prefix(ids, mask, keep) if share_prefix else 0
            cache = (carried or CarriedPrefix()).cache(backbone, ids, mask, shared) if shared else {}
            shared = shared if cache else 0  # with a cache the common prefix ran once, for every row
            hidden = backbone(input_ids=ids[:, shared:], attention_mask=mask, use_cache=bool(cache), **cache)
            nll = token_nll(hidden.last_hidden_state[:, :-1][keep_at[:, shared:]], head, labels)  # as training's
        rows = keep.nonzero()[:, 0].to(nll.device)  # row of each labelled position (row-major, as boolean indexing)
        sums = torch.zeros(len(chunk), dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)
        return [(float(s), int(n)) for s, n in zip(sums.tolist(), counts)]

    @torch.no_grad()
    def stance_losses(
        self, conversations: list[list[dict[str, str]]], on_batch: Callable[[int], Any] | None = None
    ) -> list[tuple[float, int]]:
        """``completion_losses`` of the stance probe's conversations (``evaluation.stances``: each statement's
        ``PROBE_ROWS`` answers, in order), with every answer of a statement in one row after one copy of its question
        and statements of like length together, about 2,048 tokens a forward pass (``model.group_scoring``): the same
        numbers as a row per answer, to fp32 rounding. ``on_batch(n)`` after each pass of n statements. Where the
        head cannot be split off, the attention takes no 4D mask (FlashAttention) or the model ignores
        ``position_ids`` (ALiBi), a row per answer, one statement a batch. Plain-format turns get prepare's labels."""
        conversations = [labelled(c, self.style.prompt_format) for c in conversations]
        on_batch, split = on_batch or (lambda _: None), _backbone_and_head(self.model)
        if split is None or not takes_block_mask(self.model) or not reads_positions(self.model):
            return self.completion_losses(conversations, PROBE_ROWS, on_batch, in_order=True)
        return grouped_losses(*split, self._encoded(conversations), PROBE_ROWS, self.tokenizer.pad_token_id, on_batch)

    def _encoded(self, conversations: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
        """Each conversation rendered and tokenized as training does (``data.tokenize.encode``): ids and labels."""
        from politician_lm.data.tokenize import encode

        return [
            encode(self.tokenizer, *self.style.render(c, self.tokenizer), self.context_window, add_bos=self._bos)
            for c in conversations
        ]


def _backbone_and_head(model: Any) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(backbone, output head)`` of a PEFT-wrapped model, checked as training checks it (once per model: two small
    forward passes); None for a plain model or one whose logits are not ``head(backbone(x))``."""
    if not hasattr(model, "get_base_model"):
        return None
    if "_politician_lm_split" not in model.__dict__:  # the check reads the architecture, not the adapters' state
        from politician_lm.model.scoring import split_head

        model.__dict__["_politician_lm_split"] = split_head(model)
    return model.__dict__["_politician_lm_split"]


def load_persona(
    adapters: list[str] | str | None = None,
    weights: list[float] | str | None = None,
    base_model: str | None = None,
    quantization: str | None = None,
    compute_dtype: str = "auto",
    device: str | None = None,
    allow_pickle: bool = False,
    merge_adapters: bool = False,
) -> Persona:
    """Load ``base_model`` (default: the adapters' base) with ``adapters`` active at ``weights`` (default 1 each).

    With no adapters, ``base_model`` may be an exported (merged) model folder; its ``politician_lm.json`` supplies
    the prompt format.

    ``merge_adapters`` folds the weighted LoRA updates into the base weights once, where those are plain fp32
    (CPU: the 4-bit base is de-quantized for inference anyway), so each generated token skips the adapters' extra
    matmuls. The result is a fixed persona: callers that switch adapters on and off (``evaluate``, ``serve``) keep
    them separate. Quantized or half-precision weights are never merged into (that would round the update).
    """
    folders = [read_adapter(p, allow_pickle) for p in parse_list(adapters, "adapters")] if adapters else []
    ws = adapter_weights(weights, len(folders))
    base = check_loadable(folders, base_model, allow_pickle)  # explicit base (e.g. a local copy) wins
    if not base:
        raise UserError("nothing to load: give --adapters, --base_model, or --politician with a registry entry")
    meta_source = folders[0].path if folders else Path(base)
    meta = folders[0].metadata if folders else read_metadata(meta_source)  # read_adapter has read the adapter's
    style = PromptStyle.from_metadata(meta)

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quant = quantization or (meta.get("quantization") if folders else None) or "none"
    try:
        model = load_base_model(base, quant, resolve_compute_dtype(compute_dtype, dev), dev)
    except OSError as e:  # a hub id that is not cached and cannot be downloaded, or a folder transformers cannot read
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        where = "" if Path(base).exists() else "no such folder here, and as a hub id it "
        raise UserError(
            f"{base}: {where}could not be loaded ({first[:160]}); pass --base_model with a local model folder"
        ) from None
    if dev.type == "cpu" and quant in ("nf4", "fp4"):
        dequantize_for_inference(model)  # the same weights, de-quantized once instead of at every generated token
    if folders:
        names = adapter_names(len(folders))
        model = attach_weighted(model, [f.path for f in folders], ws, names)
        activate(model, names)  # all active: their updates add up
        if merge_adapters:
            model = merge_weighted(model, names)
    model.eval()
    if dev.type == "cpu":
        pack_linears(model)  # frozen float32 layers multiply through oneDNN, packed once (model/packed_linear.py)
        fuse_lora_layers(model)  # an unmerged adapter adds its update in place, one product (model/fused_lora.py)
    tokenizer = load_tokenizer(meta_source, base)
    generation_settings = generation_defaults(folders[0].path if folders else Path(base))
    return Persona(model=model, tokenizer=tokenizer, style=style, generation=generation_settings)
