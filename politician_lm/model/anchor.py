"""Anchor records in a preference stage (``data.anchor_path``, ``model.anchor_weight``, ``model.anchor_kind``): what
keeps the speech an SFT stage learned while DPO or SimPO trains on pairs.

Before the first step one no-grad pass scores every anchor record under the starting weights (the stage's
reference, as DPO's), and checkpoints carry the scores with a hash of the records' tokens. Each training step then
adds ``anchor_weight`` x a penalty on the batch's anchor records:

- ``hinge``: the mean over records of ``max(0, NLL now - NLL at the start)``. A record costs nothing until the
  policy's likelihood of it falls below the start's (DPO-Positive's hinge, Pal et al. 2024, applied to the SFT
  records instead of the chosen answers).
- ``kl``: the mean over the records' completion positions of KL(start || now) between the next-token distributions,
  over the start's ``TOP_K`` most likely tokens of each position plus one bucket for all the others (the start's
  ids and log-probabilities are what is stored). It is 0 at the start and grows with any change of the
  distribution, where the hinge sees only the label's probability, which the SFT stage has made robust on its own
  training records: a SimPO stage that raised the held-out address's NLL by 0.055 raised the training records' by
  0.003, while the KL moved alike on both (0.019 and 0.019 nats a token; docs/preference-tuning.md).

Plain NLL on the same records was measured first and rejected: it keeps training on them, so the held-out address's
loss rose twice as much as with no anchor.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from politician_lm.batch import IGNORE_INDEX
from politician_lm.errors import UserError
from politician_lm.model.objectives import token_fingerprint
from politician_lm.model.scoring import Scorer, evaluating

ANCHOR_KEY = "politician_lm_anchor_reference"  # part of the checkpoint format
AnchorKind = Literal["hinge", "kl"]
TOP_K = 32  # the start's most likely tokens kept per position for the KL; the rest of the vocabulary is one bucket


def rest_logp(logps: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``[positions]``: the log of each row's probability mass outside ``ids`` (``logps``: log-softmax rows)."""
    return logps.scatter(-1, ids, float("-inf")).logsumexp(-1)


def top_buckets(logps: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [positions, k], log-probabilities [positions, k + 1])``: each row's ``k`` most likely tokens, then the
    log of the mass of all the others."""
    top = logps.topk(k, dim=-1)
    return top.indices, torch.cat([top.values, rest_logp(logps, top.indices)[:, None]], -1)


def bucket_kl(start: torch.Tensor, ids: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    """``[positions]``: KL(start || now) over the buckets ``top_buckets`` made of the start (``start``, ``ids``),
    with ``logps`` the policy's log-softmax rows now. Exact where the buckets are single tokens; never negative."""
    now = torch.cat([logps.gather(-1, ids), rest_logp(logps, ids)[:, None]], -1)
    p = start.to(now).exp()
    return torch.where(p > 0, p * (start.to(now) - now), 0.0).sum(-1)


def _positions(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and slot (0, 1, ... within its row) of every labelled position, row-major as boolean indexing."""
    return keep.nonzero()[:, 0], (keep.cumsum(1) - 1)[keep]


class Anchor:
    """The anchor records' scores at the start of the stage, and the penalty for moving away from them."""

    def __init__(self, weight: float = 1.0, kind: AnchorKind = "hinge") -> None:
        self.weight, self.kind = weight, kind
        # hinge: [records] float64 NLL; kl: [records, slots, TOP_K + 1] log-probabilities; by the records' "index"
        self.reference: torch.Tensor | None = None
        self.ids: torch.Tensor | None = None  # kl: [records, slots, TOP_K] int32, the start's top tokens
        self.data: str | None = None  # fingerprint of the records scored
        self.resumed = False

    def ensure(self, source: Any, scorer: Scorer, device: torch.device) -> None:
        """Score every anchor record once with the starting weights, unless a checkpoint brought the scores."""
        loader = source.anchor_dataloader() if hasattr(source, "anchor_dataloader") else None
        if loader is None:
            return
        fingerprint = token_fingerprint([loader.dataset], ("input_ids", "labels"))
        if self.reference is not None:
            if self.data != fingerprint:
                raise UserError(
                    f"data.anchor_path's {len(loader.dataset)} training records differ from the {len(self.reference)} "
                    "the run started with; resume with the same anchor, or start a new run"
                )
            return
        if self.resumed:
            raise UserError(
                "the checkpoint was saved without data.anchor_path, so its anchor's starting NLL is unknown; "
                "resume without data.anchor_path, or start a new run"
            )
        rank_zero_info(f"anchor: scoring {len(loader.dataset)} records with the starting weights (no gradients)")
        if self.kind == "kl":
            self.reference, self.ids = self._start_buckets(loader, scorer, device)
        else:
            self.reference = scorer.by_index(loader, device, scorer.row_nll)
        self.data = fingerprint

    def _start_buckets(self, loader: Any, scorer: Scorer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``top_buckets`` of every labelled position of every record, in eval mode, placed by index and slot: the
        values in the dtype they were computed in (fp32, or finer), the ids as int32 (11 MB for Trump's 358 records
        of up to 123 completion tokens)."""
        n, width = len(loader.dataset), max(sum(t != IGNORE_INDEX for t in ls[1:]) for ls in loader.dataset["labels"])
        ids = torch.zeros((n, width, TOP_K), dtype=torch.int32)
        buckets = None
        with evaluating(scorer.model):
            for batch in loader:
                logps, keep, _ = scorer.labelled_logps({k: v.to(device) for k, v in batch.items()})
                rows, slots = (t.cpu() for t in _positions(keep))
                top, values = top_buckets(logps)
                if buckets is None:
                    buckets = torch.full((n, width, TOP_K + 1), float("nan"), dtype=values.dtype)
                index = batch["index"][rows]
                buckets[index, slots], ids[index, slots] = values.cpu(), top.to(torch.int32).cpu()
        return buckets, ids

    def penalty(self, scorer: Scorer, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``weight`` x the batch's penalty, and what to log: ``anchor_nll`` (the records' NLL now) and
        ``anchor_rise`` (hinge: the mean rise above the start) or ``anchor_kl`` (kl: the mean KL a position)."""
        if self.kind == "kl":
            logps, keep, targets = scorer.labelled_logps(batch)
            rows, slots = (t.cpu() for t in _positions(keep))
            index = batch["index"].cpu()[rows]
            ids = self.ids[index, slots].to(device=logps.device, dtype=torch.long)
            kl = bucket_kl(self.reference[index, slots], ids, logps).mean()
            nll = -logps.gather(-1, targets[:, None]).mean()
            return self.weight * kl, {"anchor_nll": nll.detach(), "anchor_kl": kl.detach()}
        nll = scorer.row_nll(batch)
        start = self.reference[batch["index"].cpu()].to(nll)
        rise = (nll - start).clamp(min=0).mean()
        return self.weight * rise, {"anchor_nll": nll.detach().mean(), "anchor_rise": rise.detach()}

    def save(self, checkpoint: dict[str, Any]) -> None:
        if self.reference is not None:
            checkpoint[ANCHOR_KEY] = {self._saved_as: self.reference, "ids": self.ids, "data": self.data}

    @property
    def _saved_as(self) -> str:
        return "kl" if self.kind == "kl" else "nll"

    def load(self, checkpoint: dict[str, Any]) -> None:
        saved, self.resumed = checkpoint.get(ANCHOR_KEY), True
        if saved is None:
            return
        if self._saved_as not in saved:
            other = "hinge" if "nll" in saved else "kl"
            raise UserError(f"the checkpoint's anchor is model.anchor_kind {other}; resume with it, or start a new run")
        self.reference, self.ids, self.data = saved[self._saved_as], saved.get("ids"), saved["data"]
