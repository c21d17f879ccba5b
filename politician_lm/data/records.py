"""Find and validate prompt/completion or chat JSONL files, naming file and line on any error.

Two record shapes are accepted, one JSON object per line:

* ``{"prompt": "USER: ...", "completion": "POLITICIAN: ..."}``
* ``{"messages": [{"role": "user", "content": "..."}, ..., {"role": "assistant", "content": "..."}]}``

Any other keys (``kind``, ``topic``, ``source``, ...) are kept as metadata. Validation is a cheap pure-Python
pass, so it runs before any model or tokenizer is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from politician_lm.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class DataFiles:
    """The JSONL files behind one ``data_path``: ``val`` is empty when a split must be made."""

    train: tuple[Path, ...]
    val: tuple[Path, ...] = ()


def discover(data_path: str | Path) -> DataFiles:
    """Resolve ``data_path`` (a ``.jsonl`` file, a folder of them, or a folder with ``train.jsonl``/``val.jsonl``)."""
    path = Path(data_path)
    if not path.exists():
        raise UserError(f"{path}: data path does not exist; pass a .jsonl file or a folder of .jsonl files")
    if path.is_file():
        if path.suffix != ".jsonl":
            raise UserError(f"{path}: expected a .jsonl file (one JSON object per line)")
        return DataFiles(train=(path,))
    if (path / "train.jsonl").is_file():
        val = path / "val.jsonl"
        return DataFiles(train=(path / "train.jsonl",), val=(val,) if val.is_file() else ())
    files = tuple(sorted(p for p in path.glob("*.jsonl") if p.is_file()))
    if not files:
        raise UserError(f"{path}: folder holds no .jsonl files")
    return DataFiles(train=files)


def _check_record(obj: object) -> str | None:
    """Return why ``obj`` is not a valid record, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            return "'messages' must be a non-empty list of {role, content} objects"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                return f"messages[{i}] must be an object with string 'role' and 'content'"
            if m["role"] not in ROLES:
                return f"messages[{i}] has role {m['role']!r}; use one of {', '.join(ROLES)}"
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            return "the last message must be a non-empty 'assistant' turn (it is what the model learns)"
        return None
    missing = [k for k in ("prompt", "completion") if k not in obj]
    if missing:
        return f"missing key(s) {', '.join(repr(k) for k in missing)}; need 'prompt' and 'completion', or 'messages'"
    for key in ("prompt", "completion"):
        if not isinstance(obj[key], str):
            return f"{key!r} must be a string, got {type(obj[key]).__name__}"
    if not obj["completion"].strip():
        return "'completion' is empty"
    if "kind" in obj and not isinstance(obj["kind"], str):
        return f"'kind' must be a string, got {type(obj['kind']).__name__}"
    return None


def iter_json_lines(path: Path):
    """Yield ``(line number, object)`` for each non-blank line; raise ``UserError`` naming ``path:line``."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def validate_file(path: Path) -> int:
    """Check every line of ``path``; return the number of records or raise ``UserError`` naming ``path:line``."""
    count = 0
    for lineno, obj in iter_json_lines(path):
        problem = _check_record(obj)
        if problem:
            raise UserError(f"{path}:{lineno}: {problem}")
        count += 1
    if count == 0:
        raise UserError(f"{path}: file is empty; it needs at least one JSON record")
    return count


def validate(files: DataFiles) -> dict[Path, int]:
    """Validate every file; return the record count per file."""
    return {p: validate_file(p) for p in (*files.train, *files.val)}


def to_conversation(record: dict) -> dict:
    """Map a validated record to the canonical columns: ``messages``, ``kind`` and ``metadata`` (JSON string).

    ``{"prompt", "completion"}`` becomes a user turn and an assistant turn.
    """
    if record.get("messages") is not None:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    else:
        messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    meta = {k: v for k, v in record.items() if k not in ("prompt", "completion", "messages", "kind") and v is not None}
    return {"messages": messages, "kind": record.get("kind") or "", "metadata": json.dumps(meta, sort_keys=True)}


def split_bucket(messages: list[dict[str, str]], seed: int) -> float:
    """A stable number in [0, 1) for a conversation: records with ``bucket < val_fraction`` form the val split.

    It hashes the seed and the case- and whitespace-normalised text, so the split is deterministic, a record
    keeps its side when other records are added or removed, and exact duplicates (up to case and spacing)
    always land on the same side.
    """
    text = " ".join(re.sub(r"\s+", " ", m["content"]).strip().lower() for m in messages)
    digest = hashlib.sha256(f"{seed}\x00{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """Probe prompts: ``{"prompt", "kind"}`` or ``{"messages", "kind"}`` per line; errors name the file and line."""
    if not path.is_file():
        raise UserError(f"{path}: prompts file not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not (isinstance(obj.get("prompt"), str) or isinstance(obj.get("messages"), list)):
            raise UserError(f"{path}:{number}: need a 'prompt' string or a 'messages' list")
        messages = obj.get("messages") or [{"role": "user", "content": obj["prompt"]}]
        if messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        rows.append({"messages": messages, "kind": str(obj.get("kind") or "")})
    if not rows:
        raise UserError(f"{path}: no prompts")
    return rows
