"""Callbacks that run during fit."""

from politician_lm.callbacks.evaluation import PersonaEvaluation
from politician_lm.callbacks.export import AdapterExport
from politician_lm.callbacks.predictions import PredictionWriter
from politician_lm.callbacks.side_by_side import SideBySide
from politician_lm.callbacks.throughput import ThroughputMonitor

__all__ = ["AdapterExport", "PersonaEvaluation", "PredictionWriter", "SideBySide", "ThroughputMonitor"]
