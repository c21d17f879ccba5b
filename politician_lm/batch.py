"""The batch contract between ``data`` (which builds batches) and ``model`` (which reads them), so neither imports
the other.

A training batch holds ``input_ids`` and ``labels`` (prompt and padding positions set to ``IGNORE_INDEX``, which
is also PyTorch's default ``ignore_index``), plus ``attention_mask`` when padded, or ``position_ids`` restarting at 0
for every packed sequence when packed. A preference batch holds the same keys once for ``chosen_*`` and once for
``rejected_*``.
"""

IGNORE_INDEX = -100
