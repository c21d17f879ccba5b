"""The batch contract between ``data`` (which builds batches) and ``model`` (which reads them), so neither imports
the other.

A training batch holds ``input_ids`` and ``labels`` (prompt and padding positions set to ``IGNORE_INDEX``, which
is also PyTorch's default ``ignore_index``), plus ``attention_mask`` when padded, or ``position_ids`` restarting at 0
for every packed sequence when packed. A preference batch holds the same keys once for ``chosen_*`` and once for
``rejected_*``. ``PreferenceSource`` states what the module needs from a DataModule for DPO.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

IGNORE_INDEX = -100


@runtime_checkable
class PreferenceSource(Protocol):
    """What ``PoliticianLM`` needs from a DataModule for the DPO objective (``PoliticianDataModule`` has it)."""

    data_path: str
    preference: bool  # the files hold {prompt, chosen, rejected} pairs

    def reference_dataloaders(self) -> dict[str, Any]:
        """One loader per split over every pair, in a fixed order, for the one reference pass."""
        ...
