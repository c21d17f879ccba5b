"""The train/val/test split of prepared records.

The hash rule: a cluster goes to val when ``records.is_heldout`` holds for its first record (as the DataModule sees
it), so the split is the DataModule's own rule, and a cluster never straddles the split.

The document rule (leave-one-speech-out), when documents are held out: every record of a held-out document goes to
test, and so does any near-duplicate cluster that touches one; every other cluster, records of the training
documents and of the other inputs (tables, ready-made records, identity) alike, follows the hash rule into train or
val. So val (what ``fit`` validates on, and what ``val_loss`` selects learning rates, epochs and ``adapters/best``
by) never holds a word of the held-out documents, and test is read by ``evaluate`` alone.

The statement rule, with ``stance_val_fraction`` above 0: a stance record goes to val when its statement's id is in
``artifacts.stances.is_val_stance``'s band, else to train. Those statements then reach neither SFT nor the pairs
built from train.jsonl, and a preference stage can be chosen on them without reading the held-out statements.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from politician_lm.artifacts.stances import is_val_stance
from politician_lm.data.prepare.build import Candidate
from politician_lm.data.records import is_heldout, to_conversation

log = logging.getLogger(__name__)


def split_clusters(
    candidates: list[Candidate],
    roots: dict[int, int],
    seed: int,
    val_fraction: float,
    heldout: set[str] | frozenset[str] = frozenset(),
    stance_val_fraction: float = 0.0,
) -> tuple[list[Candidate], list[Candidate], list[Candidate]]:
    """(train, val, test) among the kept candidates (the keys of ``roots``, each mapped to its cluster's first one).

    ``heldout``: the held-out documents (``source`` of their records, or ``origin`` of ready-made records, which
    ``--records`` of a prepared folder brings back); test is empty without them.
    ``stance_val_fraction``: when above 0, a cluster that holds a stance record goes to val exactly when its
    statement is in ``artifacts.stances.is_val_stance``'s band, and to train otherwise (no hash rule for it).
    """
    sources: dict[int, set] = {r: set() for r in set(roots.values())}
    stances: dict[int, set] = {r: set() for r in sources}
    for n, r in roots.items():  # a record re-read from prepared data keeps its document as ``origin``
        sources[r].update((candidates[n].record.get("source"), candidates[n].record.get("origin")))
        if candidates[n].record.get("kind") == "stance":
            stances[r].add(str(candidates[n].record.get("stance")))
    side = {}
    for r, names in sources.items():
        if stance_val_fraction > 0 and stances[r]:
            held = any(is_val_stance(i, stance_val_fraction) for i in stances[r])
        else:
            held = is_heldout(to_conversation(candidates[r].record)["messages"], seed, val_fraction)
        side[r] = "test" if names & heldout else "val" if held else "train"
    parts: dict[str, list[Candidate]] = {"train": [], "val": [], "test": []}
    for n, c in enumerate(candidates):
        if n in roots:
            parts[side[roots[n]]].append(c)
    return parts["train"], parts["val"], parts["test"]


def split_entry(heldout: list[str], val_fraction: float, seed: int, stance_val_fraction: float = 0.0) -> dict[str, Any]:
    """``stats.json``'s ``split``: the rule, the held-out documents, ``val_fraction``, ``seed`` and, where it is
    used, ``stance_val_fraction``."""
    entry = {
        "rule": "document" if heldout else "hash",
        "heldout_documents": list(heldout),
        "val_fraction": val_fraction,
        "seed": seed,
    }
    if stance_val_fraction:
        entry["stance_val_fraction"] = stance_val_fraction
    return entry


def record_documents(records: list[tuple[Path, list[dict[str, Any]]]]) -> dict[str, list[Path]]:
    """The documents ready-made records name as their ``source`` (those of a prepared folder: transcript file names
    and corpus ids), each with the records files that hold it: ``--heldout_documents`` may name them."""
    found: dict[str, list[Path]] = {}
    for path, rows in records:
        for source in dict.fromkeys(r.get("source") for r in rows):
            if isinstance(source, str) and source:
                found.setdefault(source, []).append(path)
    return found


def warn_unheld_records(records: list[tuple[Path, list[dict[str, Any]]]], heldout: list[str]) -> None:
    """A warning for each records file of a prepared folder (one with ``stats.json`` beside it) holding records of
    documents that folder held out and this run does not: they would train now."""
    documents = record_documents(records)
    for path, _ in records:
        try:
            split = json.loads((path.parent / "stats.json").read_text(encoding="utf-8")).get("split") or {}
        except (OSError, ValueError, AttributeError):  # no prepared folder's stats beside it
            continue
        kept = [d for d in split.get("heldout_documents") or [] if d not in heldout and path in documents.get(d, [])]
        if kept:
            log.warning(
                "%s: records of %s, held out where they were prepared, go to train and val now; pass "
                "--heldout_documents %s to keep them held out",
                path, ", ".join(kept), ",".join(kept),
            )  # fmt: skip
