"""Where "names itself" comes from: each arm's identity answers split into probes that ask who the speaker is and
probes that ask for a fact, from ``politician-lm evaluate`` outputs.

``names_self`` counts an answer that carries the politician's full name or surname, whatever the question. Nine of
the 16 probes in ``data/identity_probes.jsonl`` ask who the speaker is ("introduce yourself", "I didn't catch your
name", "are you some kind of computer program?"), where a person answers with their name; seven ask for a fact
("Where did you grow up?", "Who is in your family?"), where a person answers with a place or a list of people. This
script counts the names on each group per arm, so the 0.9 target can be read against what the questions ask. It
reads the answers ``evaluate`` saved (``samples.jsonl``) with the scorecard's own name rule; it does not change the
metric.

    python scripts/identity_breakdown.py runs/sotu-trump-seed7/eval runs/sotu-biden-seed7/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from politician_lm.artifacts.profiles import load_profile_spec  # noqa: E402
from politician_lm.evaluation.metrics import name_pattern  # noqa: E402

# Probes of data/identity_probes.jsonl that ask who the speaker is (matched by a phrase of each); the rest ask facts.
WHO_PHRASES = (
    "introduce yourself",
    "tell me a little about yourself",
    "state your name",
    "is a human being answering",
    "sum up who you are",
    "doesn't recognize you",
    "who they've been listening to",
    "didn't catch your name",
    "some kind of computer program",
)


def question(row: dict) -> str:
    prompt = row["prompt"]
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def breakdown(eval_dir: Path) -> list[tuple[str, int, int, int, int]]:
    """Per arm (base excluded): names on who-questions, who-questions, names on fact questions, fact questions."""
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    name = name_pattern(str(load_profile_spec(metrics["politician"], ROOT / "data" / "profiles")["name"]))
    counts: dict[str, list[int]] = {}
    for line in (eval_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["kind"] != "identity" or row["arm"] == "base":
            continue
        c = counts.setdefault(row["arm"], [0, 0, 0, 0])
        who = any(p in question(row).lower() for p in WHO_PHRASES)
        named = bool(name.search(row["generation"]))
        c[0 if who else 2] += named
        c[1 if who else 3] += 1
    return [(arm, *c) for arm, c in counts.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dirs", nargs="+", type=Path, help="evaluate output folders (metrics.json, samples.jsonl)")
    args = ap.parse_args()
    print("| evaluate output | arm | names itself: who-questions | fact questions | all |")
    print("|---|---|---|---|---|")
    for d in args.eval_dirs:
        for arm, wn, w, fn, f in breakdown(d):
            print(f"| {d} | {arm} | {wn}/{w} | {fn}/{f} | {wn + fn}/{w + f} |")


if __name__ == "__main__":
    main()
