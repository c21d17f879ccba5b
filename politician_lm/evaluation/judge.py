"""Which style judge scores an evaluation and where it comes from: ``load_judge`` returns the ``records`` judge
(``style``) or the real-voice ``sotu`` judge (``voices``), trained once and cached under a key of everything it
learned from; ``check_presidents`` is its one-line errors, before any model loads."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import sklearn

from politician_lm.artifacts.atomic import atomic_file
from politician_lm.errors import UserError
from politician_lm.evaluation.style import StyleClassifier, default_cache_dir
from politician_lm.evaluation.voices import (
    DEFAULT_PRESIDENTS,
    VOICES_VERSION,
    ExtraVoices,
    Features,
    VoiceClassifier,
    train_voice_judge,
)

log = logging.getLogger(__name__)


def voices_cache_key(
    presidents: tuple[str, ...] | list[str],
    generic: list[str] | None,
    features: str,
    seed: int,
    extra: ExtraVoices | None = None,
    holdout: tuple[str, ...] = (),
) -> str:
    """sha256 over everything the judge learns from; ``holdout`` only where given, so the default judge's key (and
    cache) is the one it always had."""
    import importlib.metadata as md

    digest = hashlib.sha256(
        f"{VOICES_VERSION}\0sklearn={sklearn.__version__}\0sotu={md.version('sotu')}\0{features}\0{seed}\0".encode()
    )
    digest.update(("\0".join(presidents) + "\0").encode())
    for text in generic or []:
        digest.update(b"generic\0" + text.encode("utf-8") + b"\0")
    for label, (extra_train, extra_held) in sorted((extra or {}).items()):
        digest.update(f"extra\0{label}\0{len(extra_train)}\0".encode())
        for text in extra_train + extra_held:
            digest.update(text.encode("utf-8") + b"\0")
    if holdout:
        digest.update(("holdout\0" + "\0".join(sorted(holdout))).encode())
    return digest.hexdigest()


def load_or_train_voices(
    presidents: tuple[str, ...] | list[str] = DEFAULT_PRESIDENTS,
    generic: list[str] | None = None,
    cache_dir: str | None = None,
    features: Features = "plain",
    seed: int = 0,
    extra: ExtraVoices | None = None,
    holdout: tuple[str, ...] = (),
) -> VoiceClassifier:
    """The cached real-speech judge for these presidents, generic texts and ``extra`` classes, never trained on
    the ``holdout`` addresses, trained and cached (atomic) if absent."""
    import joblib

    check_presidents(list(presidents), None)  # one-line error for a missing corpus or unknown name, before any work
    holdout = extra_holdout(presidents, holdout)
    folder = default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = folder / f"{voices_cache_key(presidents, generic, features, seed, extra, holdout)}.joblib"
    if path.is_file():
        try:
            judge = joblib.load(path)  # our own cache, written below
        except Exception:
            judge = None
        if isinstance(judge, VoiceClassifier):
            return judge
    judge = train_voice_judge(presidents, generic, features, seed, extra, holdout)
    with atomic_file(path) as tmp:
        joblib.dump(judge, tmp)
    names = ", ".join(presidents) + "".join(f" and the prepared transcripts of {label}" for label in extra or {})
    log.info("voice judge: trained on the sotu addresses of %s, cached in %s", names, path)
    return judge


def extra_holdout(presidents: tuple[str, ...] | list[str], documents: tuple[str, ...]) -> tuple[str, ...]:
    """Of ``documents`` (the evaluated data's held-out ones), the addresses of ``presidents`` that the judge would
    otherwise train on: every one but each president's latest, which it always holds out."""
    from politician_lm.data.corpora import sotu

    trained = {d for p in presidents for d in sotu.document_ids(p)[:-1]}
    return tuple(sorted(set(documents) & trained))


def check_presidents(presidents: list[str], politician: str | None, own_voice: bool = False) -> None:
    """One-line errors, before any model loads: a missing corpus, an unknown president, a target it cannot judge
    (one not in ``presidents`` is judged by its own voice when ``own_voice``: its data holds out whole documents)."""
    from politician_lm.data.corpora import sotu

    for president in presidents:
        sotu.default_heldout(president)
    if politician and politician not in presidents and not own_voice:
        raise UserError(
            f"the sotu style judge knows {', '.join(presidents)}, not {politician!r}: prepare its transcripts with "
            "--heldout_documents so that the judge learns its own voice, add it to --judge_presidents, or pass "
            "--judge records"
        )


def load_judge(
    kind: str,
    style_data_dir: str,
    presidents: list[str] | tuple[str, ...],
    generic: list[str] | None,
    cache_dir: str | None = None,
    extra: ExtraVoices | None = None,
    holdout: list[str] | tuple[str, ...] = (),
    split: tuple[float, int] | None = None,
) -> StyleClassifier:
    """The style judge ``evaluate`` and ``PersonaEvaluation`` use: ``sotu`` (real voices, ``extra`` classes among
    them when given) or ``records`` (without the records the evaluated data's ``split``, ``(val_fraction,
    split_seed)``, holds out)."""
    if kind == "sotu":
        return load_or_train_voices(tuple(presidents), generic, cache_dir, extra=extra, holdout=tuple(holdout))
    from politician_lm.evaluation.style import load_or_train

    return load_or_train(style_data_dir, cache_dir, generic=generic, split=split)


@dataclass(frozen=True)
class JudgeSpec:
    """Everything ``load_judge`` learns the style judge from but its generic class, which ``evaluate`` generates
    later with the base model (``load``)."""

    kind: str  # "sotu" (real voices) or "records"
    style_data_dir: str  # <politician>/*.jsonl records: the records judge's classes, and the generic class's prompts
    presidents: tuple[str, ...]  # the sotu judge's classes
    extra: ExtraVoices | None = None  # the evaluated politician's own voice, where not a sotu president
    holdout: tuple[str, ...] = ()  # the evaluated data's held-out documents: the sotu judge never trains on them
    split: tuple[float, int] | None = None  # (val_fraction, split_seed): the records the records judge leaves out

    def load(self, generic: list[str] | None) -> StyleClassifier:
        """``load_judge`` of this spec with ``generic`` as its generic class (the default cache)."""
        return load_judge(self.kind, self.style_data_dir, self.presidents, generic, None, self.extra, self.holdout,
                          self.split)  # fmt: skip
