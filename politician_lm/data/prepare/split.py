"""The train/val split of prepared records.

The hash rule: a cluster goes to val when ``records.is_heldout`` holds for its first record (as the DataModule sees
it), so the split is the DataModule's own rule, and a cluster never straddles the split.

The document rule (leave-one-speech-out), when documents are held out: every record of a held-out document goes to
val, and so does any near-duplicate cluster that touches one; every other document (a transcript file or a corpus
document) stays whole in train, with any cluster that touches it; the records of the other inputs (tables,
ready-made records, identity) follow the hash rule.
"""

from __future__ import annotations

from typing import Any

from politician_lm.data.prepare.build import Candidate
from politician_lm.data.records import is_heldout, to_conversation


def split_clusters(
    candidates: list[Candidate],
    roots: dict[int, int],
    seed: int,
    val_fraction: float,
    heldout: set[str] | frozenset[str] = frozenset(),
    documents: set[str] | frozenset[str] = frozenset(),
) -> tuple[list[Candidate], list[Candidate]]:
    """(train, val) among the kept candidates (the keys of ``roots``, each mapped to its cluster's first one).

    ``heldout``: the held-out documents (``source`` of their records); ``documents``: every document's name, kept
    whole when any document is held out.
    """
    sources = {r: set() for r in set(roots.values())}
    for n, r in roots.items():
        sources[r].add(candidates[n].record.get("source"))
    val_roots = set()
    for r, names in sources.items():
        if heldout and names & heldout:
            val_roots.add(r)
        elif heldout and names & documents:
            continue
        elif is_heldout(to_conversation(candidates[r].record)["messages"], seed, val_fraction):
            val_roots.add(r)
    train = [c for n, c in enumerate(candidates) if n in roots and roots[n] not in val_roots]
    val = [c for n, c in enumerate(candidates) if n in roots and roots[n] in val_roots]
    return train, val


def split_entry(heldout: list[str], val_fraction: float, seed: int) -> dict[str, Any]:
    """``stats.json``'s ``split``: the rule, the held-out documents, ``val_fraction`` and ``seed``."""
    return {
        "rule": "document" if heldout else "hash",
        "heldout_documents": list(heldout),
        "val_fraction": val_fraction,
        "seed": seed,
    }
