"""The policy's forward passes that the objectives score with: the output head runs only on positions that have a
label, so the prompt tokens' logits (a [tokens, vocab] tensor, and its gradient) are never built. For a 7B model at
1024 tokens x 8 rows that is about 1 GiB of fp32 logits per batch.

``split_head`` finds out once whether a model's logits are exactly ``head(backbone(x))``; where they are not, the
model's own full forward pass is used. ``reads_positions`` finds out once whether it places tokens by
``position_ids``, which preference pair rows and the stance probe's grouped rows rely on; ``separates_packed``
whether it keeps packed examples apart, which packed rows rely on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from politician_lm.batch import IGNORE_INDEX
from politician_lm.errors import UserError
from politician_lm.model.head_loss import logits_nll, token_nll
from politician_lm.model.preference import pair_attention_mask, row_sums, sequence_logps
from politician_lm.model.shared_prefix import prefix_shared_hidden


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """``model`` in eval mode (no dropout) without gradients for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _fixed_ids(model: Any, rows: int, width: int, device: torch.device) -> torch.Tensor:
    """``[rows, width]`` token ids spread over ``model``'s vocabulary, the same every time (no randomness drawn): the
    input of the once-per-model checks below."""
    vocab = model.config.get_text_config().vocab_size
    return (torch.arange(rows * width, device=device) * 7919 % vocab).view(rows, width)


def _transforms_logits(config: Any) -> bool:
    """Whether ``config`` soft-caps or scales the logits after the head (Gemma 2 and 3, Cohere, Granite)."""
    scales = (getattr(config, k, None) for k in ("logit_scale", "logits_scaling"))
    return bool(getattr(config, "final_logit_softcapping", None)) or any(v not in (None, 1, 1.0) for v in scales)


def split_head(model: Any) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(backbone, output head)`` of a PEFT-wrapped causal LM whose logits are exactly ``head(backbone(x))``.

    Checked once on a short fixed input (no randomness drawn): models that post-process logits (soft-capping,
    scaling) or have no separable backbone return None, and training uses the model's own loss. The settings that
    post-process them are read from the config first: Gemma 2's soft-capping at 30 changes the small logits of a
    freshly initialised model by less than any tolerance a bf16 comparison could use.
    """
    base = model.get_base_model()
    if _transforms_logits(base.config.get_text_config()):
        return None
    backbone, head = getattr(base, getattr(base, "base_model_prefix", ""), None), base.get_output_embeddings()
    if not isinstance(backbone, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return None
    ids = _fixed_ids(base, 2, 8, next(head.parameters()).device)
    try:
        with evaluating(model):
            full = model(input_ids=ids, use_cache=False).logits.float()
            hidden = backbone(input_ids=ids, use_cache=False).last_hidden_state
            split = head(hidden).float()
    except (TypeError, AttributeError, ValueError):
        return None
    tol = 1e-5 if hidden.dtype == torch.float32 else 1e-3  # the same products in the same order: rounding only
    close = split.shape == full.shape and torch.allclose(split, full, rtol=tol, atol=tol * float(full.abs().max()))
    return (backbone, head) if close else None


def _logits_at(model: Any, ids: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """fp32 logits of ``ids`` placed at ``positions`` (one row, no attention mask, no cache)."""
    position_ids = torch.tensor([positions], device=ids.device)
    return model(input_ids=ids, position_ids=position_ids, use_cache=False).logits.float()


def _once(model: Any, key: str, check: Callable[[torch.Tensor], bool], width: int) -> bool:
    """``check(fixed ids [1, width])`` in eval mode without gradients, kept in ``model.__dict__[key]``: run once per
    model. A forward that takes no ``position_ids`` answers False."""
    if key not in model.__dict__:
        try:
            with evaluating(model):
                model.__dict__[key] = bool(check(_fixed_ids(model, 1, width, next(model.parameters()).device)))
        except (TypeError, ValueError):
            model.__dict__[key] = False
    return model.__dict__[key]


def reads_positions(model: Any) -> bool:
    """Whether ``model`` places tokens by ``position_ids``: checked once per model, on 4 tokens at positions 0-3 and
    at 0, 2, 4, 6 (no randomness drawn). ALiBi models (BLOOM, MPT, Falcon with ``alibi``) take positions from the
    attention mask and ignore them, so a preference pair row or the stance probe's grouped row would not compute
    what it stands for there."""

    def moves(ids: torch.Tensor) -> bool:
        return not torch.equal(_logits_at(model, ids, [0, 1, 2, 3]), _logits_at(model, ids, [0, 2, 4, 6]))

    return _once(model, "_politician_lm_positions", moves, 4)


def separates_packed(model: Any) -> bool:
    """Whether ``model`` keeps packed examples apart: checked once per model, on two 4-token examples packed in one
    row with ``position_ids`` restarting at the second and no attention mask, as ``data.packing`` hands them over.
    The second example's logits must be its own (run alone), not those it gets after the first one (positions
    0-7): transformers' masks and FlashAttention's varlen path separate them; OPT, which reads ``position_ids`` but
    builds its mask from the attention mask alone, and ALiBi models do not, and would train across examples."""

    def apart(ids: torch.Tensor) -> bool:
        alone = _logits_at(model, ids[:, 4:], [0, 1, 2, 3])
        packed = _logits_at(model, ids, [0, 1, 2, 3, 0, 1, 2, 3])[:, 4:]
        joined = _logits_at(model, ids, list(range(8)))[:, 4:]
        # within 10% of what the first example does to the second: far above rounding, bf16's included
        return bool((packed - alone).abs().max() <= 0.1 * (joined - alone).abs().max())

    return _once(model, "_politician_lm_packs", apart, 8)


def require_positions(model: Any, what: str, fix: str) -> None:
    """A one-line ``UserError`` saying ``fix`` where ``model`` ignores ``position_ids`` and ``what`` needs them."""
    if not reads_positions(model):
        raise UserError(
            f"{what} places each token by position_ids, which {_model_name(model)} ignores (its positions come from "
            f"the attention mask, as with ALiBi); {fix}"
        )


def _model_name(model: Any) -> str:
    return type(getattr(model, "get_base_model", lambda: model)()).__name__


@dataclass
class Scorer:
    """The forward passes of one built policy (``PoliticianLM.configure_model`` makes it).

    ``parts`` is ``split_head``'s answer; ``flatten_packed`` is set for FlashAttention, which reads packing from
    ``position_ids`` only in a batch of one sequence (varlen); other kernels get a block-diagonal mask built from
    ``position_ids``, which is cheapest per row.
    """

    model: Any  # the PEFT-wrapped causal LM
    parts: tuple[torch.nn.Module, torch.nn.Module] | None
    compute_dtype: torch.dtype
    flatten_packed: bool = False
    share_prefix: bool = True  # False: every row runs whole (for comparison)

    def token_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over the completion tokens (labels other than -100).

        Packed batches carry ``position_ids`` (restarting at every example) and no attention mask: transformers then
        masks block-diagonally. Falls back to the model's own loss where the head cannot be split off. With
        FlashAttention, packed rows are flattened into one varlen sequence.
        """
        if "position_ids" in batch:  # packed rows
            if not separates_packed(self.model):
                raise UserError(
                    f"data.packing: {_model_name(self.model)} attends across the examples packed into a row (it does "
                    "not keep them apart by position_ids); set data.packing: false"
                )
            if self.flatten_packed:
                # rows -> one sequence; every row starts an example at position 0, so no segment runs across rows
                batch = {k: batch[k].reshape(1, -1) for k in ("input_ids", "labels", "position_ids")}
        labels = batch["labels"]
        if self.parts is None:
            return self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"),
                labels=labels,
                position_ids=batch.get("position_ids"),
                use_cache=False,
            ).loss
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        hidden = self._labelled_hidden(batch, keep)
        return token_nll(hidden, self.parts[1], targets[keep]).mean()  # no completion token: NaN, as transformers gives

    def by_index(
        self, loader: Any, device: torch.device, score: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    ) -> torch.Tensor:
        """float64 ``score(batch)`` (a row per example) of every example ``loader`` yields, placed by its ``index``,
        in eval mode (no dropout): what a stage keeps from its starting weights (DPO's reference, the anchor's NLL)."""
        out = None
        with evaluating(self.model):
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                rows = score(batch).double().cpu()
                if out is None:
                    out = torch.full((len(loader.dataset), *rows.shape[1:]), float("nan"), dtype=torch.float64)
                out[batch["index"].cpu()] = rows
        return out

    def row_nll(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy of each row's completion tokens, ``[rows]``, fp32 or finer (unpacked rows)."""
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        if self.parts is None:
            nll = logits_nll(self._model_logits(batch, keep), targets[keep])
        else:
            nll = token_nll(self._labelled_hidden(batch, keep), self.parts[1], targets[keep])
        sums, counts = row_sums(nll, keep.nonzero()[:, 0], len(targets))
        return sums / counts.clamp(min=1).to(sums)

    def labelled_logps(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log-softmax over the vocabulary [positions, vocab] in fp32 or finer, keep [rows, length - 1],
        labels [positions])`` at every position that predicts a completion token (unpacked rows): the whole
        distribution, for the KL anchor; its anchor batches are a few records."""
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        if self.parts is None:
            logits = self._model_logits(batch, keep)
        else:
            logits = self.parts[1](self._labelled_hidden(batch, keep))
        return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1), keep, targets[keep]

    def _model_logits(self, batch: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """The model's own logits at the positions ``keep`` marks (unpacked rows; where the head cannot be split)."""
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        ).logits[:, :-1][keep]

    def _labelled_hidden(self, batch: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """The backbone's last hidden states at the positions ``keep`` marks (those with a label); the rows' common
        unscored prefix (a persona's system prompt) runs once where that is exact (``model.shared_prefix``)."""
        shared = prefix_shared_hidden(self.model, self.parts[0], batch, keep) if self.share_prefix else None
        if shared is not None:
            return shared
        hidden = self.parts[0](
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).last_hidden_state
        return hidden[:, :-1][keep]

    def pair_logps(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability of each answer's labelled tokens and their count: ``[2n]`` each, the n chosen answers
        then the n rejected ones. One forward pass over pair rows, where both answers follow one copy of the prompt
        (``politician_lm.batch``); the head runs only on positions that predict an answer token."""
        require_positions(
            self.model,
            "a preference pair row (both answers after one copy of the prompt)",
            "preference stages need a model with rotary or learned positions",
        )
        n = batch["input_ids"].shape[0]
        eager = getattr(self.model.config, "_attn_implementation", None) == "eager"
        mask = pair_attention_mask(batch["segments"], self.compute_dtype if eager else None)
        chosen, rejected = batch["chosen_targets"], batch["rejected_targets"]
        keep_c, keep_r = chosen != IGNORE_INDEX, rejected != IGNORE_INDEX
        targets = torch.cat([chosen[keep_c], rejected[keep_r]])
        rows = torch.cat([keep_c.nonzero()[:, 0], keep_r.nonzero()[:, 0] + n])  # row-major, as boolean indexing
        if self.parts is None:
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False
            ).logits
            return sequence_logps(torch.cat([logits[keep_c], logits[keep_r]]), targets, rows, 2 * n)
        hidden = self.parts[0](
            input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False
        ).last_hidden_state
        return row_sums(-token_nll(torch.cat([hidden[keep_c], hidden[keep_r]]), self.parts[1], targets), rows, 2 * n)
