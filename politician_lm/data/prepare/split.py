"""The train/val split of prepared records.

A cluster goes to val when ``records.split_bucket`` of its first record (as the DataModule sees it) is below
``val_fraction``, so the split is the DataModule's own rule, and a cluster never straddles the split.
"""

from __future__ import annotations

from politician_lm.data.prepare.build import Candidate
from politician_lm.data.records import split_bucket, to_conversation


def split_clusters(
    candidates: list[Candidate], roots: dict[int, int], seed: int, val_fraction: float
) -> tuple[list[Candidate], list[Candidate]]:
    """(train, val) among the kept candidates (the keys of ``roots``, each mapped to its cluster's first one)."""
    val_roots = {
        r
        for r in set(roots.values())
        if split_bucket(to_conversation(candidates[r].record)["messages"], seed) < val_fraction
    }
    train = [c for n, c in enumerate(candidates) if n in roots and roots[n] not in val_roots]
    val = [c for n, c in enumerate(candidates) if n in roots and roots[n] in val_roots]
    return train, val
