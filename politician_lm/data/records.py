"""Find and validate prompt/completion or chat JSONL files, naming file and line on any error.

Two record shapes are accepted for supervised fine-tuning, one JSON object per line:

* ``{"prompt": "USER: ...", "completion": "POLITICIAN: ..."}``
* ``{"messages": [{"role": "user", "content": "..."}, ..., {"role": "assistant", "content": "..."}]}``

and, for preference tuning (DPO), preference pairs (the shape of the first record decides; a file never mixes):

* ``{"prompt": "USER: ...", "chosen": "POLITICIAN: ...", "rejected": "..."}``
* ``{"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [{"role": "assistant", ...}]}``
* ``{"chosen": [messages], "rejected": [messages]}``: two conversations that differ only in the last (assistant) turn

Any other keys (``kind``, ``topic``, ``source``, ...) are kept as metadata. Validation is a cheap pure-Python
pass, so it runs before any model or tokenizer is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from politician_lm.artifacts.jsonl import read_jsonl
from politician_lm.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class DataFiles:
    """The JSONL files behind one ``data_path``: ``val`` is empty when a split must be made; ``test`` (a prepared
    folder's held-out documents) is read by ``evaluate`` only, never by fit."""

    train: tuple[Path, ...]
    val: tuple[Path, ...] = ()
    test: tuple[Path, ...] = ()


def discover(data_path: str | Path) -> DataFiles:
    """Resolve ``data_path`` (a ``.jsonl`` file, a folder of them, or a folder with ``train.jsonl``, ``val.jsonl``
    and ``test.jsonl``); not a folder with ``val.jsonl`` or ``test.jsonl`` and no ``train.jsonl`` (held-out data)."""
    path = Path(data_path)
    if not path.exists():
        raise UserError(f"{path}: data path does not exist; pass a .jsonl file or a folder (prepare writes one)")
    if path.is_file():
        if path.suffix != ".jsonl":
            raise UserError(f"{path}: expected a .jsonl file (one JSON object per line)")
        return DataFiles(train=(path,))
    if (path / "train.jsonl").is_file():
        val, test = path / "val.jsonl", path / "test.jsonl"
        return DataFiles((path / "train.jsonl",), (val,) if val.is_file() else (), (test,) if test.is_file() else ())
    if split := [name for name in ("val.jsonl", "test.jsonl") if (path / name).is_file()]:
        raise UserError(f"{path}: holds {' and '.join(split)} but no train.jsonl, so no training data; prepare again")
    files = tuple(sorted(p for p in path.glob("*.jsonl") if p.is_file()))
    if not files:
        raise UserError(f"{path}: folder holds no .jsonl files")
    return DataFiles(train=files)


def is_preference(obj: object) -> bool:
    """A preference pair (``chosen``/``rejected``) rather than a prompt/completion or chat record."""
    return isinstance(obj, dict) and ("chosen" in obj or "rejected" in obj)


def detect_preference(files: DataFiles) -> bool:
    """Whether ``files`` hold preference pairs: decided by the first record of the first file."""
    for path in files.train:
        for _, obj in read_jsonl(path):
            return is_preference(obj)
    return False


def _check_messages(msgs: object, what: str) -> str | None:
    if not isinstance(msgs, list) or not msgs:
        return f"{what} must be a non-empty list of {{role, content}} objects"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"{what}[{i}] must be an object with string 'role' and 'content'"
        if m["role"] not in ROLES:
            return f"{what}[{i}] has role {m['role']!r}; use one of {', '.join(ROLES)}"
    return None


def _answer(value: object, key: str) -> tuple[str | None, str | None]:
    """``(answer text, problem)`` of a ``chosen``/``rejected`` value in the explicit form (a string or one turn)."""
    if isinstance(value, str):
        return (value, None) if value.strip() else (None, f"{key!r} is empty")
    if isinstance(value, list):
        problem = _check_messages(value, key)
        if problem:
            return None, problem
        if len(value) != 1 or value[0]["role"] != "assistant":
            return None, f"{key!r} must be one assistant turn when 'prompt' is given"
        return (value[0]["content"], None) if value[0]["content"].strip() else (None, f"{key!r} is empty")
    return None, f"{key!r} must be a string or a list of messages, got {type(value).__name__}"


def _check_preference(obj: dict) -> str | None:
    missing = [k for k in ("chosen", "rejected") if k not in obj]
    if missing:
        return f"missing key(s) {', '.join(repr(k) for k in missing)}; a preference pair needs 'chosen' and 'rejected'"
    if "kind" in obj and not isinstance(obj["kind"], str):
        return f"'kind' must be a string, got {type(obj['kind']).__name__}"
    if "prompt" not in obj:  # implicit prompt: two whole conversations that share all but the last turn
        for key in ("chosen", "rejected"):
            if not isinstance(obj[key], list):
                return f"without 'prompt', {key!r} must be a list of messages (the whole conversation)"
            problem = _check_messages(obj[key], key)
            if problem:
                return problem
            if obj[key][-1]["role"] != "assistant" or not obj[key][-1]["content"].strip():
                return f"the last message of {key!r} must be a non-empty 'assistant' turn"
        if obj["chosen"][:-1] != obj["rejected"][:-1] or len(obj["chosen"]) < 2:
            return "without 'prompt', 'chosen' and 'rejected' must share the same turns before the last one"
        return None
    prompt = obj["prompt"]
    if isinstance(prompt, list):
        problem = _check_messages(prompt, "prompt")
        if problem:
            return problem
        if prompt[-1]["role"] == "assistant":
            return (
                "the last message of 'prompt' must not be an 'assistant' turn; the answers are 'chosen' and 'rejected'"
            )
    elif not isinstance(prompt, str):
        return f"'prompt' must be a string or a list of messages, got {type(prompt).__name__}"
    for key in ("chosen", "rejected"):
        problem = _answer(obj[key], key)[1]
        if problem:
            return problem
    return None


def check_record(obj: object, preference: bool = False) -> str | None:
    """Return why ``obj`` is not a valid record (a preference pair when ``preference``), or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if preference != is_preference(obj):
        if preference:
            return (
                "a prompt/completion record among preference pairs; a data_path holds either pairs "
                "({'prompt', 'chosen', 'rejected'}) or training records, not both"
            )
        return (
            "a preference pair ('chosen'/'rejected') among prompt/completion records; a data_path holds either "
            "pairs or training records, not both (pairs train with model.objective dpo)"
        )
    if preference:
        return _check_preference(obj)
    if "kind" in obj and not isinstance(obj["kind"], str):  # a chat record's too: stats count records by kind
        return f"'kind' must be a string, got {type(obj['kind']).__name__}"
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
    return None


def validate_file(path: Path, preference: bool = False, allow_bom: bool = False) -> Counter[str]:
    """Check every line of ``path``: its records per ``kind`` (``""``: none), or a ``UserError`` naming path:line."""
    kinds: Counter[str] = Counter()
    for lineno, obj in read_jsonl(path, allow_bom=allow_bom):
        problem = check_record(obj, preference)
        if problem:
            raise UserError(f"{path}:{lineno}: {problem}")
        kinds[obj.get("kind") or ""] += 1
    if not kinds:
        raise UserError(f"{path}: file is empty; it needs at least one JSON record")
    return kinds


def validate(files: DataFiles, preference: bool = False) -> dict[Path, Counter[str]]:
    """Validate every file (as preference pairs when ``preference``); return its records per kind."""
    return {p: validate_file(p, preference) for p in (*files.train, *files.val, *files.test)}


def to_conversation(record: dict) -> dict:
    """Map a validated record to the canonical columns: ``messages``, ``kind`` and ``metadata`` (JSON string).

    ``{"prompt", "completion"}`` becomes a user turn and an assistant turn.
    """
    if record.get("messages") is not None:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    else:
        messages = [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["completion"]},
        ]
    meta = {k: v for k, v in record.items() if k not in ("prompt", "completion", "messages", "kind") and v is not None}
    return {
        "messages": messages,
        "kind": record.get("kind") or "",
        "metadata": json.dumps(meta, sort_keys=True, default=str),
    }


def to_preference(record: dict) -> dict:
    """Map a validated preference pair to ``messages`` (context + chosen turn), ``rejected`` (the rejected answer's
    text), ``kind`` and ``metadata``. ``messages`` is what the same prompt and answer give as a training record, so
    ``split_bucket`` puts a pair on the same side of the train/val split as the record it was built from."""
    if "prompt" not in record:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["chosen"]]
        rejected = record["rejected"][-1]["content"]
    else:
        prompt = record["prompt"]
        context = (
            [{"role": m["role"], "content": m["content"]} for m in prompt]
            if isinstance(prompt, list)
            else [{"role": "user", "content": prompt}]
        )
        messages = [*context, {"role": "assistant", "content": _answer(record["chosen"], "chosen")[0]}]
        rejected = _answer(record["rejected"], "rejected")[0]
    meta = {k: v for k, v in record.items() if k not in ("prompt", "chosen", "rejected", "kind") and v is not None}
    return {
        "messages": messages,
        "rejected": rejected,
        "kind": record.get("kind") or "",
        "metadata": json.dumps(meta, sort_keys=True, default=str),
    }


def split_bucket(messages: list[dict[str, str]], seed: int) -> float:
    """A stable number in [0, 1) for a conversation: records with ``bucket < val_fraction`` form the val split.

    It hashes the seed and the case- and whitespace-normalised text, so the split is deterministic, a record
    keeps its side when other records are added or removed, and exact duplicates (up to case and spacing)
    always land on the same side.
    """
    text = " ".join(re.sub(r"\s+", " ", m["content"]).strip().lower() for m in messages)
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_heldout(messages: list[dict[str, str]], seed: int, val_fraction: float) -> bool:
    """The project's one hash-split rule: a conversation is held out (val) when its ``split_bucket`` is below
    ``val_fraction``. The DataModule, ``prepare``, ``evaluate`` and the style judge's generic pool all split by it."""
    return split_bucket(messages, seed) < val_fraction


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """Probe prompts: ``{"prompt", "kind"}`` or ``{"messages", "kind"}`` per line; errors name the file and line."""
    if not path.is_file():
        raise UserError(f"{path}: prompts file not found")
    rows = []
    for number, obj in read_jsonl(path):
        if not isinstance(obj, dict) or not (
            isinstance(obj.get("prompt"), str) or isinstance(obj.get("messages"), list)
        ):
            raise UserError(f"{path}:{number}: need a 'prompt' string or a 'messages' list")
        messages = obj.get("messages") or [{"role": "user", "content": obj["prompt"]}]
        if messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        rows.append({"messages": messages, "kind": str(obj.get("kind") or "")})
    if not rows:
        raise UserError(f"{path}: no prompts")
    return rows


def prepared_split(data_path: str | Path) -> dict[str, Any]:
    """``stats.json``'s ``split`` of a prepared folder as written (``{}`` where there is none)."""
    stats = Path(data_path) / "stats.json"
    if not stats.is_file():
        return {}
    try:
        return json.loads(stats.read_text(encoding="utf-8")).get("split") or {}
    except ValueError:
        raise UserError(f"{stats}: not valid JSON; prepare the folder again") from None


def recorded_split(data_path: str | Path) -> dict[str, Any] | None:
    """``stats.json``'s ``split`` of a prepared folder when it holds out whole documents, else None."""
    split = prepared_split(data_path)
    return split if split.get("rule") == "document" and split.get("heldout_documents") else None


def val_holds_heldout(files: DataFiles, data_path: str | Path) -> bool:
    """A folder prepared before ``test.jsonl`` existed: its ``val.jsonl`` holds the held-out documents, so fit's
    ``val_loss`` (and ``adapters/best``) would select on them."""
    return bool(files.val) and not files.test and recorded_split(data_path) is not None
