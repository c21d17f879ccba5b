"""Which held-out records ``evaluate`` asks as style prompts (``evaluation.probes.probe_items``)."""

from __future__ import annotations

from politician_lm.evaluation.probes import probe_items


def _row(kind: str, i: int) -> dict:
    return {
        "messages": [{"role": "user", "content": f"{kind} {i}?"}, {"role": "assistant", "content": "A."}],
        "kind": kind,
    }


def test_held_out_identity_and_stance_records_are_not_style_prompts():
    held = [_row(kind, i) for kind in ("style", "policy", "identity", "stance") for i in range(5)]
    style, identity = probe_items(None, held, num_prompts=60, seed=0, identity_probes="none")
    assert identity == []
    assert sorted(item["kind"] for item in style) == ["policy"] * 5 + ["style"] * 5
    assert all(item["reference"] == "A." and item["messages"][-1]["role"] == "user" for item in style)


def test_a_held_out_set_of_identity_records_only_is_used_as_it_is():
    held = [_row("identity", i) for i in range(4)]
    style, _ = probe_items(None, held, num_prompts=3, seed=0, identity_probes="none")
    assert len(style) == 3 and {item["kind"] for item in style} == {"identity"}
