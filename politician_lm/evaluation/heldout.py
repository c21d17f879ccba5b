"""Which held-out records ``evaluate`` scores: the split ``prepare`` recorded, and a seeded budget.

A folder prepared from a corpus holds out whole documents (leave-one-speech-out, ``stats.json``'s ``split``) in
its ``test.jsonl``, which fit never reads; ``evaluate`` keeps the records of those documents for its style prompts
and its loss (a folder prepared before test.jsonl existed has them in ``val.jsonl``, beside other records).
``sample_heldout`` takes a seeded sample when there are more than ``max_heldout``.
"""

from __future__ import annotations

import json
import random
from typing import Any

from politician_lm.data.records import recorded_split
from politician_lm.errors import UserError

__all__ = ["DEFAULT_MAX_HELDOUT", "document_rows", "metadata", "recorded_split", "sample_heldout", "source_of"]

# evaluate's default budget: every held-out record up to this many (about 8 min of loss pass per arm on 2 cores
# before the fast path; under 2 min with it), a seeded sample beyond.
DEFAULT_MAX_HELDOUT = 400


def metadata(row: dict[str, Any]) -> dict[str, Any]:
    """A row's metadata: the record's keys other than its text and kind (``records.to_conversation``)."""
    return json.loads(row.get("metadata") or "{}")


def source_of(row: dict[str, Any]) -> str | None:
    """The ``source`` a record was prepared from (its file name or document id)."""
    return metadata(row).get("source")


def document_rows(rows: list[dict[str, Any]], documents: list[str]) -> list[dict[str, Any]]:
    """The rows prepared from ``documents``."""
    wanted = set(documents)
    return [r for r in rows if source_of(r) in wanted]


def sample_heldout(
    rows: list[dict[str, Any]], max_heldout: int | None, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """At most ``max_heldout`` rows (a seeded sample, in their original order) and what was taken, for metrics.json."""
    if max_heldout is not None and max_heldout < 1:
        raise UserError(f"--max_heldout {max_heldout}: must be at least 1 (or unset to keep every held-out record)")
    info: dict[str, Any] = {"available": len(rows), "max_heldout": max_heldout, "seed": seed}
    if max_heldout is None or len(rows) <= max_heldout:
        return rows, info | {"used": len(rows), "sampled": False}
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_heldout))
    return [rows[i] for i in keep], info | {"used": max_heldout, "sampled": True, "indices": keep}
