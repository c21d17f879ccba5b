"""Reading a Lightning ``CSVLogger`` ``metrics.csv``: the curves of a fit that ``evaluate --logs`` and
``scripts/fit_summary.py`` show."""

from __future__ import annotations

import csv
from pathlib import Path

from politician_lm.errors import UserError

__all__ = ["read_log"]


def read_log(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Series ``{metric: [(step, value), ...]}`` from a Lightning CSVLogger ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                step = int(float(row.get("step") or 0))
                for key, value in row.items():
                    if key not in ("step", "epoch") and value not in (None, ""):
                        series.setdefault(key, []).append((step, float(value)))
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:  # a file other than a metrics.csv
        raise UserError(f"{path}: not a Lightning metrics.csv ({type(e).__name__}); pass --logs one") from None
    return series
