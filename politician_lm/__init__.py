"""politician-lm: fine-tune causal LMs to speak like a specific politician (QLoRA + Lightning).

The public API a notebook imports::

    from politician_lm import PoliticianDataModule, PoliticianLM, AdapterExport, load_persona, merge, export

Names load on first use, so ``import politician_lm.evaluation`` does not pull in Lightning or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from politician_lm.lazy import lazy_exports

_EXPORTS = {
    "AdapterExport": "politician_lm.callbacks.export",
    "PredictionWriter": "politician_lm.callbacks.predictions",
    "PoliticianDataModule": "politician_lm.data.datamodule",
    "PoliticianLM": "politician_lm.model.module",
    "UserError": "politician_lm.errors",
    "load_persona": "politician_lm.inference",
    "merge": "politician_lm.commands.merge",
    "export": "politician_lm.commands.export",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:
    from politician_lm.callbacks.export import AdapterExport
    from politician_lm.callbacks.predictions import PredictionWriter
    from politician_lm.commands.export import export
    from politician_lm.commands.merge import merge
    from politician_lm.data.datamodule import PoliticianDataModule
    from politician_lm.errors import UserError
    from politician_lm.inference import load_persona
    from politician_lm.model.module import PoliticianLM


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
