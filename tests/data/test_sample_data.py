"""The bundled sample data: size, kinds, topics, validity, and no single phrase that gives a politician away."""

import json
import re
from collections import Counter

import pytest

from politician_lm.artifacts.profiles import load_profile
from politician_lm.data import records
from tests.helpers import ROOT

POLITICIANS = ["biden", "trump"]


def load(politician):
    files = records.discover(ROOT / "data" / politician)
    records.validate(files)
    return [
        json.loads(line) for f in files.train for line in f.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


@pytest.mark.parametrize("politician", POLITICIANS)
def test_size_kinds_and_topics(politician):
    rows = load(politician)
    kinds = Counter(r["kind"] for r in rows)
    assert len(rows) >= 150 and set(kinds) == {"style", "policy", "identity"}, kinds
    assert len({r["topic"] for r in rows if r["kind"] == "policy"}) >= 10
    assert len({(r["prompt"], r["completion"]) for r in rows}) == len(rows)
    assert all(r["prompt"].startswith("USER: ") and r["completion"].startswith("POLITICIAN: ") for r in rows)
    profile = load_profile(politician, ROOT / "data" / "profiles")
    assert profile["name"] and profile["system_prompt"]


@pytest.mark.parametrize("politician", POLITICIANS)
def test_identity_answers_never_claim_to_be_an_ai(politician):
    surname = load_profile(politician, ROOT / "data" / "profiles")["name"].split()[-1]
    rows = [r for r in load(politician) if r["kind"] == "identity"]
    ai_claims = re.compile(r"\b(I am|I'm) (an? )?(AI|artificial intelligence|language model|assistant)\b", re.I)
    assert not [r["completion"] for r in rows if ai_claims.search(r["completion"])]
    assert sum(surname in r["completion"] for r in rows) >= len(rows) // 3


def ngrams(text, n):
    words = re.findall(r"[a-z']+", text.lower().removeprefix("politician: "))
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_no_single_phrase_separates_the_two_politicians():
    """A phrase that is in most of one politician's completions and rare in the other's would let a style
    classifier score well by template alone; the sample data must not have one."""
    docs = {p: [r["completion"] for r in load(p)] for p in POLITICIANS}
    worst = (0.0, "")
    for n in (1, 2, 3):
        cover = {p: Counter(g for d in docs[p] for g in ngrams(d, n)) for p in POLITICIANS}
        for a, b in (POLITICIANS, POLITICIANS[::-1]):
            for gram, count in cover[a].items():
                gap = count / len(docs[a]) - cover[b][gram] / len(docs[b])
                worst = max(worst, (gap, f"{gram!r} ({a})"))
    print(f"most separating phrase: {worst[1]} covers {worst[0]:.0%} more of one politician's completions")
    assert worst[0] < 0.35, worst
