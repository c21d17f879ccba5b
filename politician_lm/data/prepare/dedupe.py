"""Exact and near duplicates, and clusters of similar records.

Hygiene runs in input order (transcripts, interviews, tables, identity). Texts are compared on the completion (the
last assistant turn) after lower-casing, removing punctuation and the role label, and collapsing whitespace.
Exact duplicate: the same normalised text as an earlier kept record. Near duplicate: word 3-gram Jaccard
similarity >= ``near_dup_threshold`` with an earlier kept record (exact, through an inverted index of 3-grams; a
text under 3 words is one gram). Stance records (one per statement of the profile) are never near duplicates: each
is a position of its own, even where two share an argument; a stance record is an exact duplicate only of an earlier
record of the same statement id with the same text (and two records of one statement that take opposite positions
are an error). Kept records whose similarity is >= ``cluster_threshold`` join
one cluster, and a multi-turn record joins the cluster of the answer it extends.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from politician_lm.artifacts.roles import DATA_LABEL
from politician_lm.data.prepare.build import Candidate
from politician_lm.data.prepare.progress import progress_bar
from politician_lm.errors import UserError


def normalised_words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", re.sub(r"['’]", "", DATA_LABEL.sub("", text, count=1).lower())).split()


def word_trigrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)} or {tuple(words)}


def _same_statement(candidate: Candidate, text: str, seen: dict[str, tuple[str, Candidate]]) -> bool:
    """Whether a stance record repeats an earlier one of its statement (the same id and text: a prepared file given
    again with ``--records``); a UserError when the two take different positions (an edited profile's old data)."""
    sid = candidate.record.get("stance")
    if not isinstance(sid, str):
        return False
    if sid not in seen:
        seen[sid] = (text, candidate)
        return False
    first = seen[sid][1].record
    if first.get("position") != candidate.record.get("position"):
        raise UserError(
            f"stance {sid!r} is answered '{first.get('position')}' in {first.get('source')} and "
            f"'{candidate.record.get('position')}' in {candidate.record.get('source')}; keep one position per statement"
        )
    return seen[sid][0] == text


def mark_duplicates(candidates: list[Candidate], near_dup_threshold: float, cluster_threshold: float) -> dict[int, int]:
    """Set ``drop_reason`` of duplicates; return the cluster root (index of its first candidate) of each kept one."""
    exact: set[str] = set()
    stances: dict[str, tuple[str, Candidate]] = {}  # statement id -> its first record's text and record
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    sizes: dict[int, int] = {}
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for n, candidate in enumerate(progress_bar(candidates, "Deduplicating", "record", 2000)):
        if candidate.extends is not None:
            candidate.drop_reason = candidates[candidate.extends].drop_reason
            if candidate.drop_reason is None:
                parent[n] = root(candidate.extends)
            continue
        words = normalised_words(candidate.compared_text)
        curated = candidate.record.get("kind") == "stance"  # a statement of the profile is a position of its own
        if curated and _same_statement(candidate, " ".join(words), stances):
            candidate.drop_reason = "exact_duplicate"
            continue
        if not curated and " ".join(words) in exact:
            candidate.drop_reason = "exact_duplicate"
            continue
        grams = word_trigrams(words)
        shared = Counter(k for g in grams for k in index.get(g, ()))
        similarity = {k: c / (len(grams) + sizes[k] - c) for k, c in shared.items()}
        if not curated and any(s >= near_dup_threshold for s in similarity.values()):
            candidate.drop_reason = "near_duplicate"
            continue
        exact.add(" ".join(words))
        sizes[n], parent[n] = len(grams), n
        for g in grams:
            index[g].append(n)
        for k in (k for k, s in similarity.items() if s >= cluster_threshold):
            a, b = sorted((root(k), root(n)))
            parent[b] = a
    return {n: root(n) for n in parent}
