"""Tables of posts or quotes (CSV, a JSON list of objects, or JSONL): rows, and the prompt/text made from each row.

Posts are cleaned (``clean.clean_post``). Retweets are someone else's words and are dropped (``retweet``): text that
starts ``RT @``, ``MT @`` (any case) or, as old manual retweets did, ``"@someone:``, and rows an export marks as
reposts (a true ``is_retweet``/``is_repost`` column, a ``retweeted_status`` or ``reblog`` field). A post the old API
cut off (``… https://t.co/...`` at its end) is dropped (``truncated``): a record is whole sentences. A deleted post
(text null or empty) is dropped as too short.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from politician_lm.artifacts.jsonl import read_jsonl
from politician_lm.artifacts.roles import DATA_LABEL, USER_LABEL
from politician_lm.data.prepare.clean import clean_post
from politician_lm.data.prepare.files import BadFile, BadLine, read_text
from politician_lm.errors import UserError


@dataclass
class Row:
    loc: str  # "posts.csv:12" or "quotes.json: row 3", for error messages
    meta: dict[str, int]  # {"line": 12} or {"row": 3}, kept on the record
    values: dict[str, Any]


class _BadLines:
    """Raise ``BadLine``, or with ``skip_bad`` count it instead."""

    def __init__(self, skip_bad: bool):
        self.skip_bad, self.count = skip_bad, 0

    def __call__(self, message: str) -> None:
        if not self.skip_bad:
            raise BadLine(message)
        self.count += 1


def _jsonl_rows(path: Path, fail: _BadLines) -> list[Row]:
    rows: list[Row] = []
    for lineno, obj in read_jsonl(path, on_bad_line=fail, allow_bom=True, error=BadFile):
        if not isinstance(obj, dict):
            fail(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            continue
        rows.append(Row(f"{path}:{lineno}", {"line": lineno}, obj))
    return rows


def _json_rows(path: Path, fail: _BadLines) -> list[Row]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise BadFile(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        raise BadFile(f"{path}: a .json table must be a list of objects (or use .jsonl, one object per line)")
    rows: list[Row] = []
    for i, obj in enumerate(data, 1):
        if isinstance(obj, dict):
            rows.append(Row(f"{path}: row {i}", {"row": i}, obj))
        else:
            fail(f"{path}: row {i}: expected a JSON object, got {type(obj).__name__}")
    return rows


def _csv_rows(path: Path, fail: _BadLines) -> tuple[list[Row], list[str]]:
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    rows: list[Row] = []
    header: list[str] | None = None
    prev = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            fail(f"{path}:{reader.line_num}: malformed CSV ({e})")
            prev = reader.line_num
            continue
        start, prev = prev + 1, reader.line_num
        if not cells or not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            continue
        if len(cells) != len(header):
            fail(f"{path}:{start}: expected {len(header)} fields as in the header, got {len(cells)}")
            continue
        rows.append(Row(f"{path}:{start}", {"line": start}, dict(zip(header, cells))))
    if header is None:
        raise BadFile(f"{path}: empty CSV; the first line must name the columns")
    return rows, header


def read_table(path: Path, skip_bad: bool) -> tuple[list[Row], set[str], int]:
    """Rows of a CSV, JSON (a list of objects) or JSONL file, the column names seen, and the bad lines skipped."""
    suffix = path.suffix.lower()
    fail = _BadLines(skip_bad)
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, fail)
    elif suffix == ".json":
        rows = _json_rows(path, fail)
    else:
        rows, header = _csv_rows(path, fail)
        return rows, set(header), fail.count
    return rows, {k for r in rows for k in r.values}, fail.count


class TableExample(NamedTuple):
    prompt: str
    text: str  # the cleaned post
    meta: dict[str, Any]


def examples_from_table(
    path: Path, text_column: str, prompt_template: str, prompt_fields: list[str], skip_bad: bool, dropped: Counter
) -> list[TableExample]:
    """(prompt, cleaned text, metadata) per usable row of a table file."""
    rows, columns, bad = read_table(path, skip_bad)
    dropped["bad_line"] += bad
    if text_column not in columns:
        raise UserError(
            f"{path}: no column {text_column!r} (columns: {', '.join(sorted(columns)) or 'none'}); set --text_column"
        )
    unknown = [f for f in prompt_fields if f != "topic" and f not in columns]
    if unknown:
        raise UserError(
            f"{path}: --table_prompt uses {{{unknown[0]}}}, which is not a column here "
            f"(columns: {', '.join(sorted(columns))}; {{topic}} defaults to 'anything')"
        )
    out = []
    for row in rows:
        text = row.values.get(text_column)
        text = "" if text is None and text_column in row.values else text  # null: a deleted post
        missing = [f for f in prompt_fields if f != "topic" and f not in row.values]
        problem = (
            f"{row.loc}: {text_column!r} must be a string, got {type(text).__name__}"
            if not isinstance(text, str)
            else f"{row.loc}: no value for {{{missing[0]}}} used by --table_prompt"
            if missing
            else None
        )
        if problem:
            if not skip_bad:
                raise BadLine(problem)
            dropped["bad_line"] += 1
            continue
        if _is_repost(text, row.values):
            dropped["retweet"] += 1
            continue
        if _TRUNCATED.search(text):
            dropped["truncated"] += 1
            continue
        values = {k: "" if v is None else str(v) for k, v in row.values.items()}
        topic = values.get("topic", "").strip()
        prompt = prompt_template.format_map({**values, "topic": topic or "anything"})
        prompt = prompt if DATA_LABEL.match(prompt) else USER_LABEL + prompt
        meta = {**({"topic": topic} if topic else {}), "source": path.name, **row.meta}
        out.append(TableExample(prompt, clean_post(text), meta))
    return out


_REPOST_TEXT = re.compile(r"^(?:(?:RT|MT)\b\s*:?\s*@\w|[\"“]\s*@\w{1,30}\s*:)", re.I)
_REPOST_FLAGS = ("is_retweet", "isretweet", "is_repost", "isrepost")
_REPOST_FIELDS = ("retweeted_status", "retweeted_status_id", "retweeted_status_id_str", "reblog")
_TRUNCATED = re.compile(r"…\s*https?://t\.co/\S+\s*$")


def _is_repost(text: str, values: dict[str, Any]) -> bool:
    """Someone else's words: a retweet by its text, or by the flags and fields an export marks reposts with."""
    if _REPOST_TEXT.match(text.lstrip()):
        return True
    lowered = {str(k).lower(): v for k, v in values.items()}
    flagged = any(str(lowered.get(k, "")).strip().lower() in ("true", "1", "yes") for k in _REPOST_FLAGS)
    return flagged or any(lowered.get(k) not in (None, "", {}, [], 0, "0") for k in _REPOST_FIELDS)
