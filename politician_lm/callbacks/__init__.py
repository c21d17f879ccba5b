"""Callbacks that run during fit."""

from politician_lm.callbacks.export import AdapterExport

__all__ = ["AdapterExport"]
