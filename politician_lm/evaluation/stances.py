"""The stance probe: which side of a policy the model takes, read from its likelihoods, with no judge model.

Each statement of a profile's ``stances`` is asked as "Do you support {statement}?" in the arm's own prompt format,
and the model's answer is never generated: the summed log-likelihood of several answers that take each side
(``artifacts.stances.SIDE_ANSWERS``) is computed, averaged over each side's paraphrases so that no single wording
decides, and the side with the higher average is the model's position. As questionnaire studies of party-tuned
models and multiple-choice harnesses do, this compares the model's likelihoods of fixed options rather than grading
a generated text.

Per statement: ``agree`` (1.0 when the model's side is the profile's) and ``margin`` (the log-likelihood advantage
of the profile's side: positive when it agrees). The headline is agreement on held-out statements, those
``is_heldout_stance`` keeps out of training data and pairs. No model code here: callers compute the losses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from politician_lm.artifacts.stances import SIDE_ANSWERS, Stance

__all__ = ["PROBE_ROWS", "StanceScores", "probe", "probe_conversations", "probe_losses", "score_stances"]


PROBE_ROWS = sum(len(templates) for templates in SIDE_ANSWERS.values())  # conversations per statement


def probe_conversations(stance: Stance) -> list[list[dict[str, str]]]:
    """The question followed by every support answer, then every oppose answer (``PROBE_ROWS``; a user turn and an
    assistant turn each; an arm puts its system prompt in front). ``Persona.stance_losses`` scores them with the
    system prompt run once per call and each question once for its answers (all eight in one row after it), so a
    statement costs about its question plus its short answers."""
    return [
        [{"role": "user", "content": stance.question}, {"role": "assistant", "content": answer}]
        for side in SIDE_ANSWERS
        for answer in stance.answers(side)
    ]


def probe_losses(
    stances: Sequence[Stance], losses_of: Callable[[list[list[dict[str, str]]]], list[tuple[float, int]]]
) -> list[tuple[float, int]]:
    """Every stance's ``probe_conversations``, concatenated in order, scored in one call of ``losses_of`` (an arm's
    ``Persona.stance_losses``, with its system prompt put in front: one statement a batch), for ``score_stances``."""
    return losses_of([c for stance in stances for c in probe_conversations(stance)]) if stances else []


@dataclass(frozen=True)
class StanceScores:
    """Per statement, in the order scored: the side the model takes, whether it is the profile's, by what margin."""

    ids: list[str]
    sides: list[str]
    agree: list[float]
    margin: list[float]

    @property
    def agreement(self) -> float:
        """Share of statements on which the model takes the profile's side."""
        return sum(self.agree) / len(self.agree)

    @property
    def mean_margin(self) -> float:
        """Mean log-likelihood advantage of the profile's side (positive: toward the profile)."""
        return sum(self.margin) / len(self.margin)


def score_stances(stances: Sequence[Stance], losses: Sequence[tuple[float, int]]) -> StanceScores:
    """Read each stance's side from ``losses`` (``(summed NLL, tokens)`` of each stance's ``probe_conversations``,
    concatenated in order): the side whose answers have the higher mean summed log-likelihood (ties: oppose)."""
    per = PROBE_ROWS
    if len(losses) != per * len(stances):
        raise ValueError(f"score_stances: {len(losses)} losses for {len(stances)} stances; need {per} each")
    ids, sides, agree, margin = [], [], [], []
    n_support = len(SIDE_ANSWERS["support"])
    for i, stance in enumerate(stances):
        nll = [s for s, _ in losses[i * per : (i + 1) * per]]
        support = -sum(nll[:n_support]) / n_support
        oppose = -sum(nll[n_support:]) / (per - n_support)
        side = "support" if support > oppose else "oppose"
        toward_profile = (support - oppose) if stance.position == "support" else (oppose - support)
        ids.append(stance.id)
        sides.append(side)
        agree.append(float(side == stance.position))
        margin.append(float(toward_profile))
    return StanceScores(ids, sides, agree, margin)


def probe(
    stances: Sequence[Stance], losses_of: Callable[[list[list[dict[str, str]]]], list[tuple[float, int]]]
) -> StanceScores | None:
    """``probe_losses`` then ``score_stances`` (None without stances): what the fit-time callbacks report."""
    return score_stances(stances, probe_losses(stances, losses_of)) if stances else None
