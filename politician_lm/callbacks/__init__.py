"""Callbacks that run during fit. Names load on first use, so a config naming one does not import the others."""

from __future__ import annotations

from typing import TYPE_CHECKING

from politician_lm.lazy import lazy_exports

_EXPORTS = {
    "AdapterExport": "politician_lm.callbacks.export",
    "PersonaEvaluation": "politician_lm.callbacks.evaluation",
    "PredictionWriter": "politician_lm.callbacks.predictions",
    "QLoRAThroughput": "politician_lm.callbacks.throughput",
    "SideBySide": "politician_lm.callbacks.side_by_side",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from politician_lm.callbacks.evaluation import PersonaEvaluation
    from politician_lm.callbacks.export import AdapterExport
    from politician_lm.callbacks.predictions import PredictionWriter
    from politician_lm.callbacks.side_by_side import SideBySide
    from politician_lm.callbacks.throughput import QLoRAThroughput

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
