"""The scorecard's arms: who answers (base, prompt-only, each adapter), how each is scored, how two are compared.

An arm is one way of answering the same held-out prompts. Everything here works on the texts and losses an arm
produced; running the model is ``commands/_evaluate_steps.py``'s job (evaluation sits below generation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.roles import labelled
from politician_lm.artifacts.stances import Stance, is_heldout_stance, load_stances
from politician_lm.data.templates import PromptStyle
from politician_lm.evaluation import scorecard
from politician_lm.evaluation.heldout import source_of
from politician_lm.evaluation.metrics import distinct_n
from politician_lm.evaluation.stances import score_stances

log = logging.getLogger(__name__)

__all__ = [
    "BASE",
    "PROMPT_ONLY",
    "Arm",
    "ArmContext",
    "ArmRuns",
    "differences",
    "sample_rows",
    "score_arm",
    "summaries",
    "target_stances",
]

PROMPT_ONLY = "prompt-only"
BASE = "base"


@dataclass(frozen=True)
class Arm:
    """One column of the scorecard.

    ``adapter`` names the adapter switched on (None: every adapter off, the base itself); ``system_prompt`` is put
    in front of every conversation (the prompt-only arm's persona prompt); ``style`` renders the prompts exactly as
    the arm's adapter was trained to see them.
    """

    name: str
    adapter: str | None
    style: PromptStyle
    system_prompt: str | None = None

    def conversations(self, prompts: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
        """``prompts`` as this arm is asked them: its system prompt first, where it has one, and each turn labelled as
        the training data wrote it (``USER: ...`` in the plain format, as ``chat`` asks; the bundled identity probes
        and a prompts file's bare prompts have no label)."""
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [head + labelled(list(p), self.style.prompt_format) for p in prompts]

    def target(self, politician: str) -> str:
        """Whom the arm should sound like: an adapter's own politician (another politician's adapter is scored
        against that politician), else the evaluation's target."""
        return self.style.politician if self.adapter is not None and self.style.politician else politician

    @property
    def persona_prompt(self) -> str | None:
        """The system prompt the arm answers under, whose verbatim echoes ``prompt_echo`` counts."""
        return self.system_prompt if self.adapter is None else self.style.system_prompt


@dataclass(frozen=True)
class ArmContext:
    """What every arm is scored against: the target, its profile, the judge, the training completions."""

    politician: str
    profile: dict[str, Any]
    profiles_dir: str
    classifier: Any  # the style judge, predict(texts) -> labels; None until run_arms has trained it
    train_texts: list[str]
    memorization_words: int
    n_style: int  # the first n_style texts answer style prompts, the rest identity probes
    stances: str = "heldout"  # which profile stances are probed: heldout, val, all or none
    val_stances: frozenset[str] = frozenset()  # statements whose records are in the data's val.jsonl, none held out
    trained_stances: frozenset[str] | None = None  # statements with a record in the training data (None: unknown)
    other_train_texts: dict[str, list[str]] = field(default_factory=dict)  # another politician's adapter's answers
    warned: set[str] = field(default_factory=set, compare=False)  # targets whose unrecorded statements were told


@dataclass
class ArmRuns:
    """Every arm's scores, the corpus-wide distinct-n of its answers, and the samples.jsonl rows."""

    results: dict[str, scorecard.ArmScores]
    corpus_distinct: dict[str, dict[str, float]]
    samples: list[dict[str, Any]]
    classifier: Any
    n_generic: int
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each part, summed over arms
    real_speech: list[str] = field(default_factory=list)  # the judge's labels of the style prompts' references
    cached: list[str] = field(default_factory=list)  # arms reused from evaluation.arm_cache (not in seconds)


def target_stances(arm: Arm, ctx: ArmContext) -> list[Stance]:
    """The stance statements an arm is probed on: its target's profile stances, held-out ones only unless
    ``ctx.stances`` is ``all`` (then, for the evaluated politician, only statements held out, in val or with a record
    in the training data, ``ctx.trained_stances``), or ``val``: those in ``ctx.val_stances`` (none for ``none`` or a
    profile without stances). Another politician's adapter is probed on its held-out statements alone with ``all``,
    and on none with ``val``: the evaluated data says nothing of which of its statements it trained on."""
    if ctx.stances == "none":
        return []
    target = arm.target(ctx.politician)
    profile = ctx.profile if target == ctx.politician else load_profile(target, ctx.profiles_dir)
    stances = load_stances(profile, f"{ctx.profiles_dir}/{target}.yaml")
    other = target != ctx.politician  # another politician's adapter: its data's val band and records are not read
    if ctx.stances == "val":
        return [] if other else [s for s in stances if s.id in ctx.val_stances]
    if ctx.stances != "all" or other:  # held out by rule in every politician's data: the only ones known unseen
        return [s for s in stances if is_heldout_stance(s.id)]
    if ctx.trained_stances is None:
        return stances
    known = [s for s in stances if is_heldout_stance(s.id) or s.id in ctx.val_stances | ctx.trained_stances]
    if len(known) < len(stances) and target not in ctx.warned:  # added to the profile after prepare: not "seen"
        ctx.warned.add(target)  # target_stances runs several times an arm: say it once a run
        log.warning(
            "%d of %s's statements have no record in the training data (added to the profile since prepare?); "
            "they are left out of stance_agreement_seen",
            len(stances) - len(known),
            target,
        )
    return known


def score_arm(
    arm: Arm,
    texts: list[str],
    losses: list[tuple[float, int]],
    ctx: ArmContext,
    stance_losses: list[tuple[float, int]] = (),
) -> tuple[scorecard.ArmScores, dict[str, float]]:
    """Per-item scores of one arm's answers (``texts``, labels stripped), held-out ``losses`` and the losses of
    its stance probes (``evaluation.stances.probe_conversations(target_stances(arm, ctx))``), and the corpus-wide
    distinct-1/2 of its answers."""
    style_texts, identity_texts = texts[: ctx.n_style], texts[ctx.n_style :]
    target = arm.target(ctx.politician)
    s = scorecard.ArmScores(target=target, predicted=ctx.classifier.predict(style_texts) if style_texts else [])
    if identity_texts:
        profile = ctx.profile if target == ctx.politician else load_profile(target, ctx.profiles_dir)
        for key, values in scorecard.score_identity(identity_texts, profile).items():
            setattr(s, key, values)
        s.prompt_echo = scorecard.score_prompt_echo(identity_texts, arm.persona_prompt, ctx.memorization_words)
    train = ctx.train_texts if target == ctx.politician else ctx.other_train_texts.get(target)
    if train is not None:  # another politician's adapter against its own training data, not the evaluated one's
        s.memorized = scorecard.score_memorization(texts, train, ctx.memorization_words)
    scorecard.score_distinct(s, texts)
    s.loss_sum, s.loss_tokens = [x for x, _ in losses], [float(n) for _, n in losses]
    if stance_losses:
        stances = target_stances(arm, ctx)
        probed = score_stances(stances, list(stance_losses))
        s.stance_ids, s.stance_sides, s.stance_agree = probed.ids, probed.sides, probed.agree
        s.stance_heldout = [is_heldout_stance(i) for i in probed.ids]
        s.stance_val = [i in ctx.val_stances for i in probed.ids]  # another politician's arm: held-out ones only
    return s, {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}


def sample_rows(
    arm: Arm,
    items: list[dict[str, Any]],
    texts: list[str],
    predicted: list[str],
    scores: scorecard.ArmScores | None = None,
) -> list[dict[str, Any]]:
    """samples.jsonl rows of one arm: prompt, reference, generation, and the judge's label for style prompts; with
    its ``scores`` (``scorecard.ArmScores``), each answer's memorization flag and each identity answer's flags."""
    labels = predicted + [""] * (len(items) - len(predicted))
    rows = [
        {
            "arm": arm.name,
            "kind": item["kind"],
            "prompt": item["messages"][-1]["content"],
            "reference": item.get("reference", ""),
            "generation": text,
            **({"predicted": label} if label else {}),
        }
        for item, text, label in zip(items, texts, labels)
    ]
    if scores is not None:
        for row, memorized in zip(rows, scores.memorized):
            row["memorized"] = bool(memorized)
        flags = ("names_self", "claims_ai", "facts", "prompt_echo")
        for i, row in enumerate(rows[len(predicted) :]):
            row |= {k: bool(getattr(scores, k)[i]) for k in flags if len(getattr(scores, k)) > i}
    return rows


def heldout_loss_rows(results: dict[str, scorecard.ArmScores], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """heldout_losses.jsonl: per held-out record scored (in ``rows``' order), its source document and each arm's
    summed completion NLL and token count, so that any paired comparison can be recomputed item by item."""
    return [
        {
            "record": i,
            "source": source_of(row),
            "prompt": row["messages"][-2]["content"] if len(row["messages"]) > 1 else "",
            "completion": row["messages"][-1]["content"],
            "arms": {name: {"nll": s.loss_sum[i], "tokens": int(s.loss_tokens[i])} for name, s in results.items()},
        }
        for i, row in enumerate(rows)
    ]


def summaries(results: dict[str, scorecard.ArmScores], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Each arm's metrics with bootstrap 95% intervals, as metrics.json holds them."""
    return {
        name: {k: e.to_dict() for k, e in scorecard.summarize_arm(s, n_boot, seed).items()}
        for name, s in results.items()
    }


def differences(results: dict[str, scorecard.ArmScores], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Paired differences ``"a - b"`` on the same items: every adapter against prompt-only (the claim), every later
    adapter against the first (e.g. SFT followed by DPO against SFT alone), and prompt-only against the base."""
    adapters = [name for name in results if name not in (BASE, PROMPT_ONLY)]
    pairs = [(name, PROMPT_ONLY) for name in adapters]
    pairs += [(name, adapters[0]) for name in adapters[1:]]
    pairs.append((PROMPT_ONLY, BASE))
    return {
        f"{a} - {b}": {k: e.to_dict() for k, e in scorecard.compare(results[a], results[b], n_boot, seed).items()}
        for a, b in pairs
    }
