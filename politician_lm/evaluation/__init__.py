"""Persona-fidelity evaluation: plain functions over texts, no Lightning import.

``metrics`` scores any list of texts (distinct-n, repetition, ROUGE-L, chrF, identity consistency);
``style`` attributes texts to a politician with a TF-IDF classifier. Names are imported on first use, so
``import politician_lm.evaluation`` stays cheap and scikit-learn loads only when the classifier is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from politician_lm.lazy import lazy_exports

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
        chrf,
        claims_ai,
        distinct_n,
        fact_terms,
        identity_consistency,
        repetition_rate,
        rouge_l,
        summarize,
    )
    from politician_lm.evaluation.style import StyleClassifier, load_or_train, train_from_data_dir


__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})
