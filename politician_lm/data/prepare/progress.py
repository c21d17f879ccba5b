"""Progress bars of ``prepare``: shown only for long inputs (and, as tqdm decides, on a terminal)."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(items: list, desc: str, unit: str, shown_from: int) -> Any:
    """``items`` wrapped in a transient tqdm bar, disabled below ``shown_from`` items."""
    return tqdm(items, desc=desc, unit=unit, leave=False, disable=True if len(items) < shown_from else None)
