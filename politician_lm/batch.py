"""The batch contract between ``data`` (which builds batches) and ``model`` (which reads them), so neither imports
the other.

A training batch holds ``input_ids`` and ``labels`` (prompt and padding positions set to ``IGNORE_INDEX``, which
is also PyTorch's default ``ignore_index``), plus ``attention_mask`` when padded, or ``position_ids`` restarting at 0
for every packed sequence when packed.

A preference batch holds one row per pair: the prompt's tokens once, then the chosen answer, then the rejected one
(``input_ids``), with ``segments`` saying which is which (``SEGMENT_*``), ``position_ids`` that restart the rejected
answer where the prompt ends, and ``chosen_targets`` / ``rejected_targets``: the token each position's logits must
predict for that answer (``IGNORE_INDEX`` elsewhere; the prompt's last position predicts the first token of both).
The model builds the attention mask from ``segments``: every token sees the prompt and the earlier tokens of its own
answer, never the other answer. ``index`` is each pair's row in its dataset. ``PreferenceSource`` states what the
module needs from a DataModule for DPO.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

IGNORE_INDEX = -100

SEGMENT_PAD, SEGMENT_PROMPT, SEGMENT_CHOSEN, SEGMENT_REJECTED = -1, 0, 1, 2


@runtime_checkable
class PreferenceSource(Protocol):
    """What ``PoliticianLM`` needs from a DataModule for the DPO objective (``PoliticianDataModule`` has it)."""

    data_path: str
    preference: bool  # the files hold {prompt, chosen, rejected} pairs

    def reference_dataloaders(self) -> dict[str, Any]:
        """One loader per split over every pair, in a fixed order, for the one reference pass."""
        ...
