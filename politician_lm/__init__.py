"""politician-lm: fine-tune causal LMs to speak like a specific politician (QLoRA + Lightning).

The public API a notebook imports::

    from politician_lm import PoliticianDataModule, PoliticianLM, AdapterExport
"""

from politician_lm.callbacks.export import AdapterExport
from politician_lm.data.datamodule import PoliticianDataModule
from politician_lm.errors import UserError
from politician_lm.model.module import PoliticianLM

__all__ = ["AdapterExport", "PoliticianDataModule", "PoliticianLM", "UserError"]
__version__ = "0.1.0"
