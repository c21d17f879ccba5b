"""The persona evaluation set and its scores: the same prompts and metrics for fit-time and ``evaluate``.

No Lightning and no model code here: callers generate the texts, this module chooses prompts and scores texts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from politician_lm.artifacts.roles import strip_politician_label
from politician_lm.evaluation.metrics import chrf, distinct_n, identity_consistency, repetition_rate, rouge_l
from politician_lm.evaluation.style import StyleClassifier


@dataclass(frozen=True)
class EvalItem:
    """A held-out prompt: the conversation up to the answer, the reference answer, and the record's kind."""

    messages: tuple[dict[str, str], ...]
    reference: str
    kind: str = ""


def eval_items(
    conversations: list[list[dict[str, str]]], kinds: list[str], num_prompts: int, seed: int
) -> list[EvalItem]:
    """A fixed, seeded choice of ``num_prompts`` held-out conversations, identity prompts first (up to a third)."""
    items = [EvalItem(tuple(c[:-1]), c[-1]["content"], k or "") for c, k in zip(conversations, kinds)]
    rng = random.Random(seed)
    identity = [i for i in items if i.kind == "identity"]
    others = [i for i in items if i.kind != "identity"]
    rng.shuffle(identity), rng.shuffle(others)
    n_identity = min(len(identity), max(1, num_prompts // 3)) if identity else 0
    chosen = identity[:n_identity] + others[: num_prompts - n_identity]
    spare = num_prompts - len(chosen)  # too few other prompts: fill up with more identity prompts
    return chosen + identity[n_identity : n_identity + spare]


def sample_rows(items: list[EvalItem], generations: list[str]) -> list[dict[str, str]]:
    """The samples table: prompt (last user turn), kind, reference answer and generation."""
    return [
        {"prompt": i.messages[-1]["content"], "kind": i.kind, "reference": i.reference, "generation": g}
        for i, g in zip(items, generations)
    ]


def score(
    items: list[EvalItem],
    generations: list[str],
    classifier: StyleClassifier | None = None,
    politician: str | None = None,
    profile: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Persona metrics for ``generations`` (one per item), with role labels such as ``POLITICIAN:`` stripped.

    * style_attribution: share of generations the style classifier gives to ``politician``; classifier_accuracy is
      the classifier's own held-out accuracy, so the attribution can be judged.
    * identity_score / names_self / claims_ai / facts: on identity prompts only (see ``identity_consistency``).
    * rouge_l (0-1), chrf (0-100): overlap with the reference answers.
    * distinct_1, distinct_2, repetition_rate: degeneration.
    """
    texts = [strip_politician_label(g) for g in generations]
    # Probe prompts (identity questions worded unlike training) have no reference: identity metrics only.
    pairs = [(t, strip_politician_label(i.reference)) for t, i in zip(texts, items) if i.reference]
    if not pairs:
        raise ValueError("no item has a reference answer; pass held-out records, not only probe prompts")
    answers, refs = [t for t, _ in pairs], [r for _, r in pairs]
    out: dict[str, float] = {
        "rouge_l": rouge_l(answers, refs),
        "chrf": chrf(answers, refs),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition_rate": repetition_rate(texts),
    }
    if classifier is not None and politician:
        out["style_attribution"] = classifier.attribution(answers, politician)
        accuracy = getattr(classifier, "held_out_accuracy", None)
        if accuracy is not None and math.isfinite(accuracy):
            out["classifier_accuracy"] = float(accuracy)
    identity = [t for t, i in zip(texts, items) if i.kind == "identity"]
    if profile and identity:
        out.update(identity_consistency(identity, profile))
    return out
