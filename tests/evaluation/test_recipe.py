"""Fits of one recipe read together (``evaluate --pool_adapters``): per-item means over the fits."""

from __future__ import annotations

import pytest

from politician_lm.errors import UserError
from politician_lm.evaluation.arms import summaries
from politician_lm.evaluation.recipe import check_fits, pooled_items, recipe_record
from politician_lm.evaluation.scorecard import ArmScores


def fit(predicted, names, loss_sum, tokens, agree, ids=("a", "b")) -> ArmScores:
    return ArmScores(
        target="trump",
        predicted=predicted,
        names_self=names,
        claims_ai=[0.0] * len(names),
        facts=[0.0] * len(names),
        loss_sum=loss_sum,
        loss_tokens=tokens,
        stance_ids=list(ids),
        stance_sides=["support"] * len(ids),
        stance_agree=agree,
        stance_heldout=[True] * len(ids),
    )


def test_pooled_items_are_per_item_means_and_weighted_metrics_pool_their_tokens():
    a = fit(["trump", "trump", "biden"], [1.0, 0.0], [2.0, 9.0], [1.0, 3.0], [1.0, 0.0])
    b = fit(["trump", "generic", "generic"], [1.0, 1.0], [4.0, 3.0], [1.0, 3.0], [0.0, 0.0])
    pooled = pooled_items([a, b])
    assert pooled["style_attribution"] == ([1.0, 0.5, 0.0], None)
    assert pooled["names_self"] == ([1.0, 0.5], None)
    assert pooled["identity_score"] == ([1.0, 0.5], None)
    assert pooled["stance_agreement"] == ([0.5, 0.0], None)
    values, weights = pooled["heldout_loss"]  # per token: a 2, 3; b 4, 1 -> per item 3, 2 over the same tokens
    assert values == pytest.approx([3.0, 2.0]) and weights == [1.0, 3.0]


def test_stances_of_other_statements_are_not_pooled():
    a = fit(["trump"], [1.0], [1.0], [1.0], [1.0, 1.0], ids=("a", "b"))
    b = fit(["trump"], [1.0], [1.0], [1.0], [1.0, 1.0], ids=("a", "c"))
    assert "stance_agreement" not in pooled_items([a, b]) and "style_attribution" in pooled_items([a, b])


def test_the_recipe_is_the_mean_of_its_fits_with_a_paired_difference_to_prompt_only():
    a = fit(["trump"] * 4, [1.0] * 2, [2.0, 2.0], [1.0, 1.0], [1.0, 1.0])
    b = fit(["biden"] * 4, [0.0] * 2, [4.0, 4.0], [1.0, 1.0], [0.0, 1.0])
    prompt_only = fit(["generic"] * 4, [0.0] * 2, [5.0, 5.0], [1.0, 1.0], [0.0, 0.0])
    prompt_only.target = "trump"
    results = {"prompt-only": prompt_only, "A": a, "B": b}
    summary = summaries(results, 200, 0)
    record = recipe_record(results, ["A", "B"], summary, n_boot=200, seed=0)
    assert record["adapters"] == ["A", "B"]
    assert record["mean"]["style_attribution"]["value"] == 0.5 and record["fits"]["style_attribution"] == [1.0, 0.0]
    assert record["mean"]["heldout_loss"]["value"] == pytest.approx(3.0)
    assert record["mean - prompt-only"]["heldout_loss"]["value"] == pytest.approx(-2.0)
    assert record["mean - prompt-only"]["style_attribution"]["value"] == 0.5
    assert record["mean"]["stance_agreement"]["value"] == 0.75 and record["fits"]["stance_agreement"] == [1.0, 0.5]


def test_pooling_needs_two_fits_of_one_politician():
    with pytest.raises(UserError, match="at least 2 adapters"):
        check_fits(["a"], ["trump"])
    with pytest.raises(UserError, match="a: trump, b: biden"):
        check_fits(["a", "b"], ["trump", "biden"])
    check_fits(["a", "b"], ["trump", "trump"])
