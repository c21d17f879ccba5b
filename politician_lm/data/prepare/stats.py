"""``stats.json`` of a prepared folder and the summary ``prepare`` prints.

``records`` (train/val/test/total), ``kinds`` and ``sources`` (written records), ``clusters``, ``tokens`` (nearest-rank
p50/p90/p99 and max of prompt + completion tokens with ``tokenizer``, no special tokens; a chat record's prompt is
its earlier turns joined by newlines), ``dropped`` (count per reason in ``REASONS``), ``split`` (``rule``: ``document``
when whole documents are held out, else ``hash``; ``heldout_documents``, ``val_fraction``, ``seed``,
and ``stance_val_fraction`` where it is above 0),
``documents`` (each transcript file and corpus document, a corpus document with its ``date`` and ``title``: its
written ``records`` and the ``split`` they went to: ``test`` for a held-out document, else ``train``, ``val`` or
``train+val`` as the hash rule divided them),
``settings`` (the arguments), and, added by ``prepare``: ``profiles`` (the profile file each of ``identity_profile``
and ``stances`` came from, what ``fit`` checks ``data.politician`` against) and ``stances`` (the statement ids whose
records went to ``train`` and ``val``, and the ``heldout`` ones ``evaluate`` probes).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from politician_lm.data.prepare.build import Candidate

REASONS = (
    "bad_file",
    "bad_line",
    "heldout_stance",
    "retweet",
    "truncated",
    "missing_profile_field",
    "too_short",
    "too_long",
    "prompt_too_long",
    "exact_duplicate",
    "near_duplicate",
)


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles."""
    v = sorted(values)
    return {f"p{p}": v[max(0, math.ceil(p / 100 * len(v)) - 1)] for p in (50, 90, 99)} | {"max": v[-1]}


def document_stats(
    parts: dict[str, list[Candidate]], documents: dict[str, dict[str, str]], heldout: list[str]
) -> dict[str, dict[str, Any]]:
    """Per document (a corpus document with its ``date`` and ``title``): written ``records`` and the ``split`` (or
    splits) they went to."""
    sides = {part: Counter(c.record.get("source") for c in rows) for part, rows in parts.items()}
    out = {}
    for doc, meta in documents.items():
        where = [part for part in sides if sides[part][doc]]
        split = "+".join(where) if where else "test" if doc in heldout else "train"
        out[doc] = {**meta, "records": sum(sides[part][doc] for part in sides), "split": split}
    return out


def prepare_stats(
    parts: dict[str, list[Candidate]],
    clusters: int,
    dropped: Counter,
    settings: dict[str, Any],
    split: dict[str, Any],
    documents: dict[str, dict[str, str]] | None = None,
) -> dict:
    """``stats.json`` of ``parts`` (``train``, ``val``, ``test``: the candidates written to each file)."""
    every = [c for rows in parts.values() for c in rows]
    return {
        "records": {part: len(rows) for part, rows in parts.items()} | {"total": len(every)},
        "kinds": dict(sorted(Counter(c.record.get("kind") or "" for c in every).items())),
        "sources": dict(sorted(Counter(c.record["source"] for c in every).items())),
        "clusters": clusters,
        "tokens": percentiles([c.tokens for c in every]),
        "dropped": {r: dropped[r] for r in REASONS},
        "split": split,
        "documents": document_stats(parts, documents or {}, split["heldout_documents"]),
        "settings": settings,
    }


def profile_stats(
    profiles: dict[str, str], heldout: list[str] | None, train: list[Candidate], val: list[Candidate]
) -> dict[str, Any]:
    """``stats.json``'s ``profiles`` (what ``fit`` checks ``data.politician`` against) and, with stances (``heldout``
    not None), ``stances``: the statement ids whose records went to train and val, and the held-out ones."""
    out: dict[str, Any] = {"profiles": profiles} if profiles else {}
    if heldout is not None:
        ids = {part: sorted(c.record["stance"] for c in rows if c.record.get("kind") == "stance")
               for part, rows in (("train", train), ("val", val))}  # fmt: skip
        out["stances"] = {**ids, "heldout": sorted(heldout)}
    return out


def summary(out: Path, stats: dict[str, Any]) -> str:
    def counts(d: dict, most: int = 8) -> str:
        top = Counter({k: v for k, v in d.items() if v}).most_common()
        more = f", and {len(top) - most} more" if len(top) > most else ""
        return ", ".join(f"{k} {v}" for k, v in top[:most]) + more or "none"

    r, t = stats["records"], stats["tokens"]
    return "\n".join(
        [
            f"prepared {r['total']} records ({r['train']} train / {r['val']} val"
            + (f" / {r['test']} test" if r.get("test") else "")
            + f") in {out}",
            f"  kinds:   {counts(stats['kinds'])}",
            f"  sources: {counts(stats['sources'])}",
            f"  tokens (prompt+completion): p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}",
            f"  dropped: {counts(stats['dropped'])}",
            *(
                [
                    f"  stances: {len(st['train'])} train / {len(st['val'])} val / {len(st['heldout'])} held out "
                    "(evaluate probes these; no record of them is written)"
                ]
                if (st := stats.get("stances"))
                else []
            ),  # fmt: skip
            *(
                [f"  held out (whole documents, in test): {', '.join(stats['split']['heldout_documents'])}"]
                if stats.get("split", {}).get("rule") == "document"
                else []
            ),
        ]
    )
