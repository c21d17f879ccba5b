"""Callbacks that run during fit."""

from politician_lm.callbacks.evaluation import PersonaEvaluation
from politician_lm.callbacks.export import AdapterExport
from politician_lm.callbacks.predictions import PredictionWriter

__all__ = ["AdapterExport", "PersonaEvaluation", "PredictionWriter"]
