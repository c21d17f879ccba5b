"""The prompts ``evaluate`` asks every arm: the user's prompts file split by kind, else a seeded choice of held-out
prompts and the identity probes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from politician_lm.data import records
from politician_lm.errors import UserError

DEFAULT_IDENTITY_PROBES = "data/identity_probes.jsonl"
OWN_METRIC_KINDS = ("identity", "stance")  # records scored by their own probes, not asked as style prompts


def probe_items(
    prompts_file: str | None, held: list[dict[str, Any]], num_prompts: int, seed: int, identity_probes: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(style items, identity items)``: the user's prompts file split by kind, else a seeded choice of held-out
    prompts (each with its real answer as ``reference``) and the identity probes. Held-out ``identity`` and ``stance``
    records (a hash split holds some out) are not asked as style prompts: the identity probes and the stance probe
    score those questions, and as a style prompt one was judged for style alone (a "Who are you?" answer with a judge
    label and no identity flags). A held-out set of those kinds only is used as it is."""
    if prompts_file:
        if identity_probes and identity_probes.lower() != "none" and identity_probes != DEFAULT_IDENTITY_PROBES:
            raise UserError(
                f"--identity_probes {identity_probes} is not read with --prompts_file (its kind: identity rows are the "
                "identity probes); put the questions in the prompts file, or leave --prompts_file out"
            )
        probes = records.read_prompts(Path(prompts_file))
        return [p for p in probes if p["kind"] != "identity"], [p for p in probes if p["kind"] == "identity"]
    styled = [r for r in held if r.get("kind") not in OWN_METRIC_KINDS] or held
    chosen = random.Random(seed).sample(styled, min(num_prompts, len(styled)))
    style_items = [
        {"messages": r["messages"][:-1], "kind": r["kind"], "reference": r["messages"][-1]["content"]} for r in chosen
    ]
    if not identity_probes or identity_probes.lower() == "none":
        return style_items, []
    if not Path(identity_probes).is_file():
        raise UserError(
            f"--identity_probes {identity_probes}: file not found (relative to {Path.cwd()}); pass the identity "
            "probes JSONL, e.g. the repository's data/identity_probes.jsonl, or none to score no identity"
        )
    identity_items = records.read_prompts(Path(identity_probes))
    return style_items, identity_items
