"""Several fits of one recipe (its seeds) read as the recipe: per item, the mean over the fits.

One fit's style attribution moves by several answers in 60 with the seed (LoRA initialisation and batch order), so
a target read on one fit is partly a draw of the seed. ``evaluate --pool_adapters true`` scores every fit on the
same items as usual and adds the recipe: each item's score averaged over the fits, its mean with a bootstrap 95%
interval over items, the paired difference to prompt-only on the same items, and each fit's own value beside it.
The interval is over items with these fits held fixed: it says how precisely the items measure this set of fits,
not how another set of seeds would score (the fits' own values show that spread).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from politician_lm.errors import UserError
from politician_lm.evaluation.arms import PROMPT_ONLY
from politician_lm.evaluation.scorecard import ArmScores, Items, paired_difference, per_item, summarize_items

__all__ = ["check_fits", "pooled_items", "recipe_record"]


def pooled_items(fits: list[ArmScores]) -> Items:
    """Per item, the mean over ``fits`` of every metric they all have on the same items. A weighted metric (held-out
    loss by tokens, distinct-2 by bigrams) pools its numerators and weights, so the pooled mean is that of all the
    fits' tokens or bigrams together."""
    items = [per_item(f) for f in fits]
    same_statements = all(f.stance_ids == fits[0].stance_ids for f in fits)
    out: Items = {}
    for key, (values, weights) in items[0].items():
        if not all(key in i and len(i[key][0]) == len(values) for i in items):
            continue
        if key.startswith("stance") and not same_statements:
            continue
        v = np.array([i[key][0] for i in items], dtype=float)
        if weights is None:
            out[key] = (v.mean(axis=0).tolist(), None)
            continue
        w = np.array([i[key][1] for i in items], dtype=float)
        mean_w = w.mean(axis=0)
        out[key] = (((v * w).mean(axis=0) / np.maximum(mean_w, 1e-12)).tolist(), mean_w.tolist())
    return out


def check_fits(fits: list[str], politicians: list[str | None]) -> None:
    """One-line errors for ``--pool_adapters``: at least two adapters, all of one politician."""
    if len(fits) < 2:
        raise UserError(f"--pool_adapters needs at least 2 adapters (fits of one recipe), got {len(fits)}")
    if len(set(politicians)) != 1:
        named = ", ".join(f"{name}: {who}" for name, who in zip(fits, politicians))
        raise UserError(f"--pool_adapters pools fits of one politician; these differ: {named}")


def recipe_record(
    results: dict[str, ArmScores], fits: list[str], summary: dict[str, dict[str, Any]], n_boot: int, seed: int
) -> dict[str, Any]:
    """metrics.json's ``recipe``: the mean of ``fits`` (arm names) per metric with its interval, its paired
    difference to prompt-only, and each fit's value (from ``summary``, the arms' own metrics)."""
    arms = [results[name] for name in fits]
    pooled = pooled_items(arms)
    reference = results.get(PROMPT_ONLY)
    ref_items = per_item(reference, target=arms[0].target) if reference else {}
    same = reference is not None and reference.stance_ids == arms[0].stance_ids
    difference = {
        key: paired_difference(values, ref_items[key][0], weights, ref_items[key][1], n_boot, seed).to_dict()
        for key, (values, weights) in pooled.items()
        if key in ref_items and len(ref_items[key][0]) == len(values) and (same or not key.startswith("stance"))
    }
    return {
        "adapters": list(fits),
        "mean": {key: e.to_dict() for key, e in summarize_items(pooled, n_boot, seed).items()},
        f"mean - {PROMPT_ONLY}": difference,
        "fits": {key: [round(summary[name][key]["value"], 4) for name in fits] for key in pooled},
    }
