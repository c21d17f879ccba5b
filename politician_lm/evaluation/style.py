"""Style attribution: a TF-IDF + logistic-regression classifier that says which politician a text sounds like.

Trained on the bundled completions (``data/<politician>/*.jsonl``), it scores generated text: ``attribution``
is the fraction of texts the classifier gives to the intended politician. ``load_or_train`` caches the fitted
classifier under ``~/.cache/politician_lm/style``, keyed by the training files' bytes, the seed and versions.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import joblib
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline

from politician_lm.artifacts.atomic import atomic_file
from politician_lm.artifacts.jsonl import read_jsonl
from politician_lm.artifacts.roles import strip_politician_label
from politician_lm.data import records
from politician_lm.errors import UserError
from politician_lm.evaluation.cache_keys import cache_root

log = logging.getLogger(__name__)

Split = tuple[float, int]  # (val_fraction, split_seed) of the evaluated data: the records it holds out
# Bump when the features, the model or the data reading change, so old cache entries are never reused.
STYLE_VERSION = "style-v2"  # v2: per-class held-out accuracy
# The class of text the base model writes without any persona: a generation counts for a politician only when the
# classifier prefers that politician to this class and to every other politician.
GENERIC = "generic"


class StyleClassifier:
    """Char n-gram (char_wb 2-5) and word n-gram (1-2) TF-IDF features, joined, fed to a logistic regression."""

    def __init__(self, C: float = 10.0) -> None:
        """``C``: inverse L2 regularisation strength of the logistic regression."""
        self.C = C
        self.pipeline: Pipeline | None = None
        self.held_out_accuracy: float | None = None
        self.per_class_accuracy: dict[str, float] | None = None  # on the held-out split, per label
        self.labels: list[str] = []

    def _new_pipeline(self, seed: int) -> Pipeline:
        features = FeatureUnion(
            [
                ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1)),
                ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            ]
        )
        model = LogisticRegression(C=self.C, max_iter=2000, random_state=seed)
        return Pipeline([("features", features), ("model", model)])

    def fit(
        self, texts: list[str], labels: list[str], held_out_fraction: float = 0.2, seed: int = 0
    ) -> StyleClassifier:
        """Fit on a stratified split, store ``held_out_accuracy`` on the rest, then refit on all texts.

        With ``held_out_fraction=0`` there is no split and ``held_out_accuracy`` stays ``None``.
        """
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels; pass one label per text")
        if len(set(labels)) < 2:
            raise ValueError(
                f"need texts from at least 2 politicians to train a style classifier, got {sorted(set(labels))}"
            )
        texts = [strip_politician_label(t) for t in texts]
        self.held_out_accuracy, self.per_class_accuracy = None, None
        if held_out_fraction > 0:
            train_x, test_x, train_y, test_y = train_test_split(
                texts, labels, test_size=held_out_fraction, random_state=seed, stratify=labels
            )
            right = [p == t for p, t in zip(self._new_pipeline(seed).fit(train_x, train_y).predict(test_x), test_y)]
            self.held_out_accuracy = sum(right) / len(right)
            self.per_class_accuracy = {
                label: sum(r for r, t in zip(right, test_y) if t == label) / test_y.count(label)
                for label in sorted(set(test_y))
            }
        self.pipeline = self._new_pipeline(seed).fit(texts, labels)
        self.labels = [str(c) for c in self.pipeline.classes_]
        return self

    def predict(self, texts: list[str]) -> list[str]:
        """The politician each text sounds most like (a leading ``POLITICIAN:`` label is ignored)."""
        if self.pipeline is None:
            raise RuntimeError("StyleClassifier.predict called before fit; call fit() or use load_or_train()")
        if not texts:
            return []
        return [str(p) for p in self.pipeline.predict([strip_politician_label(t) for t in texts])]

    def attribution(self, texts: list[str], politician: str) -> float:
        """Fraction of ``texts`` that the classifier attributes to ``politician``, in [0, 1]."""
        if politician not in self.labels:
            raise UserError(
                f"unknown politician {politician!r} for the style classifier; use one of: {', '.join(self.labels)}"
            )
        if not texts:
            raise ValueError("no texts to attribute; pass at least one generated text")
        predictions = self.predict(texts)
        return sum(p == politician for p in predictions) / len(predictions)


def training_files(data_dir: str | Path = "data") -> dict[str, list[Path]]:
    """``{politician: sorted jsonl files}`` for every ``data_dir/<politician>/*.jsonl``, skipping ``profiles``."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"data folder {root} not found; pass the folder that holds <politician>/*.jsonl")
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name == "profiles" or folder.name.startswith("."):
            continue
        files = sorted(folder.glob("*.jsonl"))
        if files:
            found[folder.name] = files
    return found


def read_completions(path: Path, split: Split | None = None) -> list[str]:
    """The completion of every record (``completion``, or the last assistant turn of ``messages``), label stripped;
    with ``split`` (``(val_fraction, split_seed)``), of every record the DataModule's rule does not hold out.

    The file is checked with the DataModule's own reader, so errors name ``file:line`` the same way.
    """
    records.validate_file(path)
    convs = [records.to_conversation(obj)["messages"] for _, obj in read_jsonl(path)]
    if split is not None:
        convs = [c for c in convs if not records.is_heldout(c, split[1], split[0])]
    return [strip_politician_label(c[-1]["content"]) for c in convs]


def train_from_data_dir(
    data_dir: str = "data", seed: int = 0, generic: list[str] | None = None, split: Split | None = None
) -> StyleClassifier:
    """Fit a ``StyleClassifier`` on every politician's completions, labelled by folder name (at least 2 needed).

    ``generic``: texts the base model wrote without a persona, learned as the class ``GENERIC``. ``split``:
    ``(val_fraction, split_seed)`` of the evaluated data; records the DataModule's rule holds out at it are left out,
    so the judge never learns the held-out answers whose labels it reads as "real speech".
    """
    files = training_files(data_dir)
    check_judge_data(files, data_dir)
    texts: list[str] = []
    labels: list[str] = []
    for politician, paths in files.items():
        for path in paths:
            completions = read_completions(path, split)
            texts += completions
            labels += [politician] * len(completions)
    if generic:
        texts += list(generic)
        labels += [GENERIC] * len(generic)
    return StyleClassifier().fit(texts, labels, seed=seed)


def check_judge_data(files: dict[str, list[Path]], data_dir: str | Path) -> None:
    """What ``train_from_data_dir`` refuses, in one line: ``files`` (``training_files(data_dir)``) of fewer than 2
    politicians, or a record its reader rejects; ``evaluate`` checks it before any model loads."""
    if len(files) < 2:
        raise UserError(
            f"{data_dir}: found data for {sorted(files) or 'no politician'}; the style classifier needs at least 2 "
            "politicians in <data_dir>/<politician>/*.jsonl"
        )
    for path in (p for paths in files.values() for p in paths):
        records.validate_file(path)  # as read_completions does


def require_generic_source(data_dir: str, option: str) -> None:
    """One line when ``data_dir`` holds no ``<politician>/*.jsonl`` training records: the judge's generic class is
    the base model's answers to their prompts, and without them the judge would run with no generic class."""
    if not training_files(data_dir):
        raise UserError(
            f"{option} {data_dir}: no <politician>/*.jsonl training records, which the judge's generic class "
            "is the base model's answers to: pass the folder that holds them (the repository's data/)"
        )


def generic_pool(data_dir: str, n: int, val_fraction: float, split_seed: int = 42, seed: int = 0) -> list[list[dict]]:
    """A seeded choice of ``n`` training-side prompts (conversations up to the answer) from every politician's records.

    The base model's answers to them, without persona, are the classifier's ``generic`` class. Records that the
    DataModule's split rule (``val_fraction``, ``split_seed``) holds out are never used, so no held-out prompt of any
    politician teaches the classifier, and evaluations of different politicians share one cached set.
    """
    import random

    pool = [
        conv["messages"][:-1]
        for paths in training_files(data_dir).values()
        for path in paths
        for _, obj in read_jsonl(path)
        for conv in [records.to_conversation(obj)]
        if not records.is_heldout(conv["messages"], split_seed, val_fraction)
    ]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def cache_key(
    data_dir: str = "data", seed: int = 0, generic: list[str] | None = None, split: Split | None = None
) -> str:
    """sha256 over the sorted (path relative to ``data_dir``, bytes) of the training files, the seed, versions, the
    generic texts and the split."""
    root = Path(data_dir)
    digest = hashlib.sha256(f"{STYLE_VERSION}\0sklearn={sklearn.__version__}\0seed={seed}\0".encode())
    if split is not None:
        digest.update(f"split={split[0]!r},{split[1]!r}\0".encode())
    paths = sorted(p for files in training_files(root).values() for p in files)
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        data = path.read_bytes()
        digest.update(f"{len(data)}\0".encode() + data)
    for text in generic or []:
        digest.update(b"generic\0" + text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/politician_lm/style``, by default ``~/.cache/politician_lm/style``."""
    return cache_root() / "style"


def cache_path(
    data_dir: str = "data",
    cache_dir: str | None = None,
    seed: int = 0,
    generic: list[str] | None = None,
    split: Split | None = None,
) -> Path:
    """Where ``load_or_train`` keeps the classifier for these training files, seed, generic texts and split."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    return folder / f"{cache_key(data_dir, seed, generic, split)}.joblib"


def load_or_train(
    data_dir: str = "data",
    cache_dir: str | None = None,
    seed: int = 0,
    generic: list[str] | None = None,
    split: Split | None = None,
) -> StyleClassifier:
    """Load the cached classifier for these files, seed, generic texts and split (``train_from_data_dir``), or
    train one and cache it (atomic)."""
    path = cache_path(data_dir, cache_dir, seed, generic, split)
    if path.is_file():
        try:
            # Our own cache, written below by this function: never a user-supplied file.
            classifier = joblib.load(path)
        except Exception:  # a truncated or incompatible entry: retrain and overwrite it
            classifier = None
        if isinstance(classifier, StyleClassifier):
            log.info("style classifier: loaded %s", path)
            return classifier
    classifier = train_from_data_dir(data_dir, seed=seed, generic=generic, split=split)
    with atomic_file(path) as tmp:
        joblib.dump(classifier, tmp)
    log.info("style classifier: trained on %s, cached in %s", data_dir, path)
    return classifier
