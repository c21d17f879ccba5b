"""politician-lm: fine-tune causal LMs to speak like a specific politician (QLoRA + Lightning).

The public API a notebook imports::

    from politician_lm import PoliticianDataModule, PoliticianLM, AdapterExport, load_persona, merge, export

Names load on first use, so ``import politician_lm.evaluation`` does not pull in Lightning or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AdapterExport": "politician_lm.callbacks.export",
    "PredictionWriter": "politician_lm.callbacks.predictions",
    "PoliticianDataModule": "politician_lm.data.datamodule",
    "PoliticianLM": "politician_lm.model.module",
    "UserError": "politician_lm.errors",
    "load_persona": "politician_lm.generation",
    "merge": "politician_lm.adapters.merge",
    "export": "politician_lm.adapters.export",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:
    from politician_lm.adapters.export import export
    from politician_lm.adapters.merge import merge
    from politician_lm.callbacks.export import AdapterExport
    from politician_lm.callbacks.predictions import PredictionWriter
    from politician_lm.data.datamodule import PoliticianDataModule
    from politician_lm.errors import UserError
    from politician_lm.generation import load_persona
    from politician_lm.model.module import PoliticianLM


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
