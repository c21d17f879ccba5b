"""A style judge that knows the real voices: trained on the presidents' own State of the Union addresses.

The judge of ``style`` learns from this project's own records, so it can only say whether an adapter sounds like
our pastiche. This one learns each president's voice from paragraphs of their *training* addresses (every address
but the held-out one, ``sotu.default_heldout``) and the base model's generic answers, and reports its accuracy on
paragraphs of the held-out addresses, which neither it nor any adapter prepared with the same split has read.

Two feature sets were compared (addresses of different years talk about different things, so topic can mislead):

* ``voice``: character 2-4-grams of the text with every content word masked to ``*`` per letter (text distortion:
  only function words, punctuation, word lengths and rhythm survive), plus function-word 1-2-grams;
* ``plain`` (the default): the ``style`` judge's character 2-5-grams and word 1-2-grams of the plain text.

Measured on the held-out addresses (Biden 2024, Trump 2026, Obama 2016; three presidents, 50-word chunks), ``plain``
scores 0.725 and ``voice`` 0.593: Trump's 2026 address is far more ad-libbed than his 2018-2020 ones, and masking
content words loses more of what still tells it apart than it removes of topic. So the default is ``plain``.

Texts are cut into chunks of whole sentences of about ``CHUNK_WORDS`` words, the length of a generated answer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from politician_lm.evaluation.style import GENERIC, StyleClassifier

# classes beside the presidents, already chunked: {label: (training chunks, held-out chunks)} (see ``own_voice``)
ExtraVoices = dict[str, tuple[list[str], list[str]]]

log = logging.getLogger(__name__)

VOICES_VERSION = "voices-v5"  # bump when prepare's cleaning changes any address's paragraphs (v5: correction asterisks)
CHUNK_WORDS = 50
DEFAULT_PRESIDENTS = ("biden", "trump", "obama")
Features = Literal["voice", "plain"]
JudgeKind = Literal["records", "sotu"]

# English function words: pronouns, determiners, auxiliaries, prepositions, conjunctions, common adverbs.
FUNCTION_WORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few
    for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him
    himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my
    myself no nor not of off on once only or other ought our ours ourselves out over own same shan't she she'd
    she'll she's should shouldn't so some such than that that's the their theirs them themselves then there there's
    these they they'd they'll they're they've this those through to too under until up very was wasn't we we'd
    we'll we're we've were weren't what what's when when's where where's which while who who's whom why why's with
    won't would wouldn't you you'd you'll you're you've your yours yourself yourselves just now also well oh yes
    folks look let going gonna got get really still even never ever every much many lot lots thing things way
    because anyway actually tonight together again always will shall may might must""".split()
)
_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?|\d+|[^\sA-Za-z\d]")


def distort(text: str) -> str:
    """Function words and punctuation kept (lower-cased), every other word as ``*`` per letter, numbers as ``#``."""
    out = []
    for tok in _TOKEN.findall(text.replace("’", "'")):
        low = tok.lower()
        if low in FUNCTION_WORDS or not tok[0].isalnum():
            out.append(low)
        elif tok[0].isdigit():
            out.append("#")
        else:
            out.append("*" * len(tok))
    return " ".join(out)


def chunk_text(paragraphs: list[str], words: int = CHUNK_WORDS) -> list[str]:
    """Whole sentences of consecutive paragraphs, joined until a chunk has about ``words`` words."""
    from politician_lm.data.prepare.clean import split_sentences

    chunks, buf, n = [], [], 0
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            buf.append(sentence)
            n += len(sentence.split())
            if n >= words:
                chunks.append(" ".join(buf))
                buf, n = [], 0
    if n >= words // 2:
        chunks.append(" ".join(buf))
    return chunks


def _pipeline(features: Features, seed: int, C: float) -> Pipeline:
    if features == "voice":
        union = FeatureUnion(
            [
                (
                    "shape",
                    TfidfVectorizer(analyzer="char", ngram_range=(2, 4), sublinear_tf=True, preprocessor=distort),
                ),
                (
                    "function",
                    TfidfVectorizer(
                        analyzer="word",
                        ngram_range=(1, 2),
                        sublinear_tf=True,
                        preprocessor=distort,
                        token_pattern=r"[a-z']+",
                    ),
                ),
            ]
        )
    else:
        union = FeatureUnion(
            [
                ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
                ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)),
            ]
        )
    model = LogisticRegression(C=C, max_iter=3000, random_state=seed, class_weight="balanced")
    return Pipeline([("features", union), ("model", model)])


class VoiceClassifier(StyleClassifier):
    """A ``StyleClassifier`` whose held-out accuracy is measured on texts it was given apart (held-out addresses),
    not on a random split (see the module docstring for the features)."""

    def __init__(self, features: Features = "plain", C: float = 10.0) -> None:
        super().__init__(C)
        self.features: Features = features
        self.per_class_accuracy: dict[str, float] = {}

    def _new_pipeline(self, seed: int) -> Pipeline:
        return _pipeline(self.features, seed, self.C)

    def fit_heldout(
        self, train: dict[str, list[str]], held_out: dict[str, list[str]], seed: int = 0
    ) -> VoiceClassifier:
        """Fit on ``train`` (``{label: texts}``); ``held_out_accuracy`` is the accuracy on ``held_out``."""
        x = [t for texts in train.values() for t in texts]
        y = [label for label, texts in train.items() for _ in texts]
        if len(set(y)) < 2:
            raise ValueError(f"need texts of at least 2 classes to train a judge, got {sorted(set(y))}")
        self.pipeline = self._new_pipeline(seed).fit(x, y)
        self.labels = [str(c) for c in self.pipeline.classes_]
        test_x = [t for texts in held_out.values() for t in texts]
        test_y = [label for label, texts in held_out.items() for _ in texts]
        if test_x:
            predicted = self.pipeline.predict(test_x)
            self.held_out_accuracy = float(sum(p == t for p, t in zip(predicted, test_y)) / len(test_y))
            self.per_class_accuracy = {
                label: float(sum(p == t for p, t in zip(predicted, test_y) if t == label) / max(1, test_y.count(label)))
                for label in held_out
            }
        return self


@dataclass
class VoiceData:
    """Chunks of every president's training addresses and of their held-out address, by label."""

    train: dict[str, list[str]] = field(default_factory=dict)
    held_out: dict[str, list[str]] = field(default_factory=dict)
    heldout_documents: dict[str, str] = field(default_factory=dict)


def corpus_voices(
    presidents: tuple[str, ...] | list[str] = DEFAULT_PRESIDENTS, holdout: tuple[str, ...] = ()
) -> VoiceData:
    """Cleaned paragraphs of each president's addresses (``prepare``'s own cleaning), chunked, split by address: each
    president's latest address is held out, and so is every address in ``holdout`` (the documents the evaluated
    data held out, so the judge never reads the address it judges answers against)."""
    from politician_lm.data.corpora import sotu
    from politician_lm.data.prepare.transcripts import speech_paragraphs

    data = VoiceData()
    for president in presidents:
        heldout = sotu.default_heldout(president)
        data.heldout_documents[president] = heldout
        for doc in sotu.documents(president):
            paragraphs = [p.text for p in speech_paragraphs(doc.id, doc.text, {sotu.SPEAKER})]
            side = data.held_out if doc.id == heldout or doc.id in holdout else data.train
            side.setdefault(president, []).extend(chunk_text(paragraphs))
    return data


def split_generic(generic: list[str], held_out_fraction: float = 0.25) -> tuple[list[str], list[str]]:
    """Every fourth generic text (by position) held out: the generic texts come in a seeded, shuffled order."""
    every = max(2, round(1 / held_out_fraction))
    return (
        [t for i, t in enumerate(generic) if i % every != 0],
        [t for i, t in enumerate(generic) if i % every == 0],
    )


def train_voice_judge(
    presidents: tuple[str, ...] | list[str] = DEFAULT_PRESIDENTS,
    generic: list[str] | None = None,
    features: Features = "plain",
    seed: int = 0,
    extra: ExtraVoices | None = None,
    holdout: tuple[str, ...] = (),
) -> VoiceClassifier:
    """The judge over ``presidents`` (+ ``generic`` when given, + ``extra`` classes, such as a politician learned
    from the user's transcripts), held-out accuracy on the held-out addresses (and the extra held-out chunks);
    ``holdout``: addresses held out beside each president's latest (``corpus_voices``)."""
    data = corpus_voices(presidents, holdout)
    train, held = dict(data.train), dict(data.held_out)
    for label, (extra_train, extra_held) in (extra or {}).items():
        train[label], held[label] = extra_train, extra_held
    if generic:
        train[GENERIC], held[GENERIC] = split_generic([g for g in generic if g.strip()])
    return VoiceClassifier(features).fit_heldout(train, held, seed)
