"""scripts/identity_breakdown.py: its who/fact split of the shipped identity probes, and its counts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("identity_breakdown", ROOT / "scripts" / "identity_breakdown.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_who_phrases_pick_nine_of_the_shipped_probes_each_once():
    script = load_script()
    probes = [json.loads(line)["prompt"].lower() for line in (ROOT / "data" / "identity_probes.jsonl").open()]
    hits = [[p for p in probes if phrase in p] for phrase in script.WHO_PHRASES]
    assert [len(h) for h in hits] == [1] * 9  # every phrase still names exactly one probe
    assert len({h[0] for h in hits}) == 9 and len(probes) == 16


def test_breakdown_counts_names_per_group_and_arm(tmp_path):
    script = load_script()
    (tmp_path / "metrics.json").write_text(json.dumps({"politician": "trump"}))
    rows = [
        ("prompt-only", "I'm sorry, I didn't catch your name.", "Donald Trump."),
        ("prompt-only", "Where did you grow up?", "In Queens, New York."),
        ("a", "I'm sorry, I didn't catch your name.", "Nobody special."),
        ("a", "Where did you grow up?", "Queens. Ask anyone, I'm Trump."),
        ("a", "Who is in your family?", "My kids."),
        ("base", "Where did you grow up?", "I'm Trump."),  # base is not counted
    ]
    kinds = [
        {"arm": a, "kind": "identity", "prompt": [{"role": "user", "content": q}], "generation": g} for a, q, g in rows
    ]
    kinds.append({"arm": "a", "kind": "style", "prompt": "Continue", "generation": "Trump"})
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kinds))
    assert script.breakdown(tmp_path) == [("prompt-only", 1, 1, 0, 1), ("a", 0, 1, 1, 2)]
