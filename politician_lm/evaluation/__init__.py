"""Persona-fidelity evaluation: plain functions over texts, no Lightning import.

``metrics`` scores any list of texts (distinct-n, repetition, ROUGE-L, chrF, identity consistency);
``style`` attributes texts to a politician with a TF-IDF classifier. Names are imported on first use, so
``import politician_lm.evaluation`` stays cheap and scikit-learn loads only when the classifier is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "chrf": "metrics",
    "claims_ai": "metrics",
    "distinct_n": "metrics",
    "fact_terms": "metrics",
    "identity_consistency": "metrics",
    "repetition_rate": "metrics",
    "rouge_l": "metrics",
    "summarize": "metrics",
    "StyleClassifier": "style",
    "load_or_train": "style",
    "train_from_data_dir": "style",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from politician_lm.evaluation.metrics import (
        chrf, claims_ai, distinct_n, fact_terms, identity_consistency, repetition_rate, rouge_l, summarize,
    )
    from politician_lm.evaluation.style import StyleClassifier, load_or_train, train_from_data_dir


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
