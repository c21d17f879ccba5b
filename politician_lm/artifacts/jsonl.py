"""JSON Lines, read and written one way everywhere: errors name ``file:line``, writes are atomic."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from politician_lm.artifacts.atomic import atomic_write_text
from politician_lm.errors import UserError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, object)`` for each non-blank line; raise ``UserError`` naming ``path:line``."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def jsonl_line(row: Any) -> str:
    """One record as a line: UTF-8 kept as written (no ``\\u`` escapes), newline-terminated."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def jsonl_text(rows: Iterable[Any]) -> str:
    return "".join(jsonl_line(r) for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write ``rows`` to ``path`` atomically (a temporary file in the same folder, then one rename)."""
    return atomic_write_text(path, jsonl_text(rows))
