"""The persona scorecard: per-item scores for each arm, bootstrap 95% intervals, and paired differences.

An *arm* is one way of answering the same held-out prompts: the base with no persona, the base given only the
persona's system prompt (``prompt-only``), an adapter, a merged adapter, another politician's adapter. Every
metric is computed per item first, so the interval of a mean, and of the difference between two arms on the
same items (a paired bootstrap), comes from resampling items. No Lightning and no model code here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from politician_lm.evaluation.metrics import claims_ai, copies_training, distinct_counts, fact_pattern, name_pattern


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap 95% interval over ``n`` items."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _ratio(values: np.ndarray, weights: np.ndarray | None, index: np.ndarray) -> np.ndarray:
    """Mean (or weighted mean: sum(v*w)/sum(w)) of ``values`` over each row of resampled ``index``."""
    if weights is None:
        return values[index].mean(axis=-1)
    return (values[index] * weights[index]).sum(axis=-1) / np.maximum(weights[index].sum(axis=-1), 1e-12)


def bootstrap(
    values: Sequence[float], weights: Sequence[float] | None = None, n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of ``values`` (weighted by ``weights`` if given) with a percentile bootstrap 95% interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values to bootstrap; pass at least one per-item score")
    w = None if weights is None else np.asarray(weights, dtype=float)
    point = float(_ratio(v, w, np.arange(v.size)))
    index = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    low, high = np.percentile(_ratio(v, w, index), [2.5, 97.5])
    return Estimate(point, float(low), float(high), int(v.size))


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    weights_a: Sequence[float] | None = None,
    weights_b: Sequence[float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``mean(a) - mean(b)`` over the same items, resampling items jointly (a paired bootstrap)."""
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if va.shape != vb.shape or va.size == 0:
        raise ValueError(
            f"paired_difference needs two equal, non-empty lists of per-item scores, got {va.size} and {vb.size}"
        )
    wa = None if weights_a is None else np.asarray(weights_a, dtype=float)
    wb = None if weights_b is None else np.asarray(weights_b, dtype=float)
    full = np.arange(va.size)
    point = float(_ratio(va, wa, full) - _ratio(vb, wb, full))
    index = np.random.default_rng(seed).integers(0, va.size, size=(n_boot, va.size))
    low, high = np.percentile(_ratio(va, wa, index) - _ratio(vb, wb, index), [2.5, 97.5])
    return Estimate(point, float(low), float(high), int(va.size))


@dataclass
class ArmScores:
    """Per-item scores of one arm. Lists are aligned with the items they were computed on."""

    target: str | None = None  # the politician this arm should sound like
    predicted: list[str] = field(default_factory=list)  # style classifier label per held-out generation
    names_self: list[float] = field(default_factory=list)  # per identity-probe answer
    claims_ai: list[float] = field(default_factory=list)
    facts: list[float] = field(default_factory=list)
    prompt_echo: list[float] = field(default_factory=list)  # per identity answer: copies 12+ words of its system prompt
    memorized: list[float] = field(default_factory=list)  # per generation (held-out + probes)
    loss_sum: list[float] = field(default_factory=list)  # per held-out completion: summed NLL
    loss_tokens: list[float] = field(default_factory=list)  # ... and its token count
    distinct_unique: list[float] = field(default_factory=list)  # per generation: distinct word bigrams
    distinct_total: list[float] = field(default_factory=list)  # ... and all its word bigrams
    stance_ids: list[str] = field(default_factory=list)  # per stance statement probed (evaluation.stances)
    stance_sides: list[str] = field(default_factory=list)  # ... the side the arm takes
    stance_agree: list[float] = field(default_factory=list)  # ... 1.0 when that is its target's documented side
    stance_heldout: list[bool] = field(default_factory=list)  # ... whether training data and pairs never saw it
    stance_val: list[bool] = field(default_factory=list)  # ... whether it is in the data's val.jsonl (not held out)

    def stance_part(self, part: str) -> list[float]:
        """Stance agreement per statement of ``part``: ``heldout``, ``val`` (its records are in the data's
        val.jsonl, so neither SFT nor train pairs saw it: ``prepare --stance_val_fraction``) or ``seen``."""
        val = self.stance_val or [False] * len(self.stance_agree)
        parts = ["heldout" if h else "val" if v else "seen" for h, v in zip(self.stance_heldout, val)]
        return [a for a, p in zip(self.stance_agree, parts) if p == part]

    def held_out_sides(self, documented: bool = False) -> dict[str, str]:
        """Per held-out statement, the side the arm takes, or (``documented``) its target's documented side."""
        flip = {"support": "oppose", "oppose": "support"}
        return {
            i: side if agree or not documented else flip[side]
            for i, side, agree, h in zip(self.stance_ids, self.stance_sides, self.stance_agree, self.stance_heldout)
            if h
        }

    @property
    def attributed(self) -> list[float]:
        return [float(p == self.target) for p in self.predicted]

    @property
    def per_token_loss(self) -> list[float]:
        return [s / max(t, 1) for s, t in zip(self.loss_sum, self.loss_tokens)]


def score_identity(answers: list[str], profile: dict) -> dict[str, list[float]]:
    """Per answer: names itself (full name or surname), claims to be an AI, mentions a profile fact."""
    name = name_pattern(str(profile["name"]))
    facts = fact_pattern(profile)
    return {
        "names_self": [float(bool(name.search(a))) for a in answers],
        "claims_ai": [float(claims_ai(a)) for a in answers],
        "facts": [float(bool(facts and facts.search(a))) for a in answers],
    }


def score_prompt_echo(answers: list[str], system_prompt: str | None, n_words: int = 12) -> list[float]:
    """Per answer: does it copy ``n_words`` or more consecutive words of the arm's own system prompt? An arm without a
    system prompt cannot echo one (all 0)."""
    if not system_prompt:
        return [0.0] * len(answers)
    return [float(c) for c in copies_training(answers, [system_prompt], n_words)]


def score_distinct(scores: ArmScores, texts: list[str], n: int = 2) -> None:
    """Per generation, its distinct and total word n-grams: ``distinct_2`` is sum(distinct) / sum(total), the share
    of an answer's bigrams that are not repeats within it (degeneration into loops lowers it)."""
    counts = [distinct_counts(t, n) for t in texts]
    scores.distinct_unique, scores.distinct_total = [float(u) for u, _ in counts], [float(t) for _, t in counts]


def score_memorization(texts: list[str], training_texts: list[str], n_words: int = 12) -> list[float]:
    return [float(c) for c in copies_training(texts, training_texts, n_words)]


METRICS = (
    "style_attribution",
    "names_self",
    "claims_ai",
    "facts",
    "identity_score",
    "prompt_echo",
    "memorization",
    "heldout_loss",
    "distinct_2",
    "stance_agreement",
    "stance_agreement_val",
    "stance_agreement_seen",
)
STANCE_PARTS = (("stance_agreement", "heldout"), ("stance_agreement_val", "val"), ("stance_agreement_seen", "seen"))


Items = dict[str, tuple[list[float], list[float] | None]]


def per_item(scores: ArmScores, target: str | None = None) -> Items:
    """Every metric the arm has, as per-item values and the weights of its mean (None: a plain mean); style is
    judged against ``target`` (default: the arm's own)."""
    out: Items = {}
    if scores.predicted:
        goal = scores.target if target is None else target
        out["style_attribution"] = ([float(p == goal) for p in scores.predicted], None)
    if scores.names_self:
        for key in ("names_self", "claims_ai", "facts"):
            out[key] = (getattr(scores, key), None)
        out["identity_score"] = (identity_per_item(scores), None)
    if scores.prompt_echo:
        out["prompt_echo"] = (scores.prompt_echo, None)
    if scores.memorized:
        out["memorization"] = (scores.memorized, None)
    if scores.loss_sum:
        out["heldout_loss"] = (scores.per_token_loss, scores.loss_tokens)
    if sum(scores.distinct_total):
        out["distinct_2"] = (_distinct_per_item(scores), scores.distinct_total)
    for key, part in STANCE_PARTS:
        if values := scores.stance_part(part):
            out[key] = (values, None)
    return out


def summarize_items(items: Items, n_boot: int = 2000, seed: int = 0) -> dict[str, Estimate]:
    """Each metric's (weighted) mean over its items with a bootstrap 95% interval."""
    return {key: bootstrap(values, weights, n_boot=n_boot, seed=seed) for key, (values, weights) in items.items()}


def summarize_arm(scores: ArmScores, n_boot: int = 2000, seed: int = 0) -> dict[str, Estimate]:
    """Every metric of an arm with its interval; metrics without items are left out."""
    return summarize_items(per_item(scores), n_boot, seed)


def _distinct_per_item(scores: ArmScores) -> list[float]:
    return [u / t if t else 0.0 for u, t in zip(scores.distinct_unique, scores.distinct_total)]


def identity_per_item(scores: ArmScores) -> list[float]:
    """Names itself and does not claim to be an AI, per identity answer."""
    return [float(n and not a) for n, a in zip(scores.names_self, scores.claims_ai)]


def compare(a: ArmScores, b: ArmScores, n_boot: int = 2000, seed: int = 0) -> dict[str, Estimate]:
    """``a - b`` for every metric both arms have, paired over the same items (style uses ``a``'s target for both;
    identity only between arms of one target: naming Trump less or more often than another arm names Biden is no
    difference)."""
    out: dict[str, Estimate] = {}
    if a.predicted and b.predicted:
        b_on_a = [float(p == a.target) for p in b.predicted]
        out["style_attribution"] = paired_difference(a.attributed, b_on_a, n_boot=n_boot, seed=seed)
    if a.names_self and b.names_self and a.target == b.target:
        for key in ("names_self", "claims_ai", "facts"):
            out[key] = paired_difference(getattr(a, key), getattr(b, key), n_boot=n_boot, seed=seed)
        out["identity_score"] = paired_difference(identity_per_item(a), identity_per_item(b), n_boot=n_boot, seed=seed)
    if a.prompt_echo and b.prompt_echo:
        out["prompt_echo"] = paired_difference(a.prompt_echo, b.prompt_echo, n_boot=n_boot, seed=seed)
    if a.memorized and b.memorized:
        out["memorization"] = paired_difference(a.memorized, b.memorized, n_boot=n_boot, seed=seed)
    if a.loss_sum and b.loss_sum:
        out["heldout_loss"] = paired_difference(
            a.per_token_loss, b.per_token_loss, a.loss_tokens, b.loss_tokens, n_boot=n_boot, seed=seed
        )
    if sum(a.distinct_total) and sum(b.distinct_total) and len(a.distinct_total) == len(b.distinct_total):
        out["distinct_2"] = paired_difference(
            _distinct_per_item(a), _distinct_per_item(b), a.distinct_total, b.distinct_total, n_boot=n_boot, seed=seed
        )
    if a.stance_ids and a.stance_ids == b.stance_ids:  # the same statements (arms of one target)
        for key, part in STANCE_PARTS:
            if (va := a.stance_part(part)) and (vb := b.stance_part(part)):
                out[key] = paired_difference(va, vb, n_boot=n_boot, seed=seed)
    return out


def _disputes(a: ArmScores, b: ArmScores) -> tuple[tuple[dict, dict], tuple[dict, dict], list[str]]:
    """Each arm's held-out sides and its target's documented sides, and the statements the two targets disagree on."""
    sides_a, sides_b = a.held_out_sides(), b.held_out_sides()
    documented_a, documented_b = a.held_out_sides(documented=True), b.held_out_sides(documented=True)
    disputed = [i for i in sides_a if i in sides_b and documented_a[i] != documented_b[i]]
    return (sides_a, documented_a), (sides_b, documented_b), disputed


def opposite_sides(a: ArmScores, b: ArmScores, n_boot: int = 2000, seed: int = 0) -> Estimate | None:
    """Share of the held-out statements on which the two arms' targets disagree (a Biden and a Trump adapter) where
    the two arms take opposite sides; None when there is no such statement."""
    (sides_a, _), (sides_b, _), disputed = _disputes(a, b)
    values = [float(sides_a[i] != sides_b[i]) for i in disputed]
    return bootstrap(values, n_boot=n_boot, seed=seed) if values else None


def dispute_counts(a: ArmScores, b: ArmScores) -> dict[str, int]:
    """On the held-out statements the two arms' targets disagree on (``opposite_sides``' statements): how many there
    are, on how many both arms take their own target's documented side (opposite sides for the right reason), and
    how many each arm answers "support". Two arms that each take one side of every statement reach full opposition
    with no position known; these counts show it."""
    (sides_a, documented_a), (sides_b, documented_b), disputed = _disputes(a, b)
    return {
        "disputed": len(disputed),
        "both_documented": sum(sides_a[i] == documented_a[i] and sides_b[i] == documented_b[i] for i in disputed),
        "support_a": sum(sides_a[i] == "support" for i in disputed),
        "support_b": sum(sides_b[i] == "support" for i in disputed),
    }


def confusion(arms: dict[str, ArmScores], labels: list[str]) -> dict[str, dict[str, int]]:
    """For each arm, how many of its generations the style classifier gave to each label."""
    return {name: {label: s.predicted.count(label) for label in labels} for name, s in arms.items() if s.predicted}
