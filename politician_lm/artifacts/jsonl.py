"""JSON Lines (and UTF-8 text files), read and written one way everywhere: errors name ``file:line``, writes are
atomic."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from politician_lm.artifacts.atomic import atomic_write_text
from politician_lm.errors import UserError


def read_jsonl(
    path: str | Path,
    on_bad_line: Callable[[str], None] | None = None,
    allow_bom: bool = False,
    error: type[UserError] = UserError,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, object)`` for each non-blank line.

    A line that is not UTF-8 or not JSON raises ``UserError`` naming ``path:line``; with ``on_bad_line`` that message
    is passed to it instead and the line is skipped (``prepare --skip_bad`` counts them). ``allow_bom`` accepts a
    UTF-8 byte-order mark at the start of the file, as spreadsheet exports write it. A file that cannot be opened
    raises ``error`` (``prepare``'s ``BadFile``, which ``--skip_bad`` skips).
    """
    try:
        fh = open(path, "rb")  # opened apart from the with below, so an OSError names the file
    except OSError as e:
        raise error(f"{path}: cannot read the file ({e.strerror or e})") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if allow_bom and lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                problem = f"{path}:{lineno}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8"
            else:
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                    continue
                except json.JSONDecodeError as e:
                    problem = f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})"
            if on_bad_line is None:
                raise UserError(problem)
            on_bad_line(problem)


def read_utf8(path: str | Path, error: type[UserError] = UserError) -> str:
    """The whole file as UTF-8 text (a leading byte-order mark dropped); ``error`` names the line of the first
    undecodable byte."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read the file ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None


def jsonl_line(row: Any) -> str:
    """One record as a line: UTF-8 kept as written (no ``\\u`` escapes), newline-terminated."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def jsonl_text(rows: Iterable[Any]) -> str:
    return "".join(jsonl_line(r) for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write ``rows`` to ``path`` atomically (a temporary file in the same folder, then one rename)."""
    return atomic_write_text(path, jsonl_text(rows))
