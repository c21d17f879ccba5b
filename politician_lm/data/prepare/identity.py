"""The identity template (questions and answers with ``{name}``-style placeholders) and the profile values."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from politician_lm.data.prepare.files import read_text
from politician_lm.data.prepare.placeholders import placeholders
from politician_lm.errors import UserError

IDENTITY_FIELDS = (
    "name",
    "first_name",
    "short_name",
    "title",
    "party",
    "born",
    "birth_date",
    "birthplace",
    "offices_list",
    "first_office",
    "latest_office",
    "education_list",
    "spouse",
    "spouse_name",
    "children_list",
    "signature_phrase",
)


def _join(items: list[str]) -> str:
    sep = "; " if any("," in s for s in items) else ", "
    if len(items) < 3:
        return " and ".join(items)
    return sep.join(items[:-1]) + f"{sep}and {items[-1]}"


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if value else []
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


def profile_values(profile: dict[str, Any]) -> dict[str, str]:
    """Placeholder values from a profile (see ``IDENTITY_FIELDS``); fields the profile lacks are absent."""
    name = str(profile["name"]).strip()
    words = [w for w in name.split() if w.rstrip(".").lower() not in ("jr", "sr", "ii", "iii", "iv")] or [name]
    v = {"name": name, "first_name": words[0], "short_name": words[-1]}
    for key in ("title", "party", "born"):
        if _strings(profile.get(key)):
            v[key] = _strings(profile[key])[0]
    if "born" in v:
        m = re.match(r"^(.*?\b\d{4})\s*,\s*(.+)$", v["born"])
        v["birth_date"] = m.group(1) if m else v["born"]
        if m:
            v["birthplace"] = m.group(2)
    for key, lst in (("offices", "offices_list"), ("education", "education_list")):
        items = _strings(profile.get(key))
        if items:
            v[lst] = _join(items)
            if key == "offices":
                v["first_office"], v["latest_office"] = items[0], items[-1]
    family = profile.get("family") if isinstance(profile.get("family"), dict) else {}
    if _strings(family.get("spouse")):
        v["spouse"] = _strings(family["spouse"])[0]
        v["spouse_name"] = re.split(r"[(;]", v["spouse"])[0].strip()
    if _strings(family.get("children")):
        v["children_list"] = _join(_strings(family["children"]))
    if _strings(profile.get("signature_phrases")):
        v["signature_phrase"] = _strings(profile["signature_phrases"])[0].rstrip(",.;: ")
    return v


@dataclass
class IdentityEntry:
    number: int  # 1-based position in the template list
    topic: str
    turns: list[tuple[str, str]]  # (question, answer) templates
    fields: set[str]


def load_identity_template(path: Path) -> list[IdentityEntry]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: an identity template is a non-empty JSON list of {{question, answer, topic}} entries")
    entries = []
    for i, item in enumerate(data, 1):
        where = f"{path}: entry {i}"
        raw = item.get("turns") if isinstance(item, dict) and "turns" in item else [item]
        if (
            not isinstance(item, dict)
            or not isinstance(raw, list)
            or not raw
            or not all(
                isinstance(t, dict)
                and isinstance(t.get("question"), str)
                and isinstance(t.get("answer"), str)
                and t["question"].strip()
                and t["answer"].strip()
                for t in raw
            )
        ):
            raise UserError(f"{where}: needs non-empty 'question' and 'answer' strings, or 'turns': a list of them")
        turns = [(t["question"], t["answer"]) for t in raw]
        names = {n for q, a in turns for n in placeholders(q, where) + placeholders(a, where)}
        unknown = sorted(names - set(IDENTITY_FIELDS))
        if unknown:
            raise UserError(
                f"{where} ({turns[0][0]!r}): unknown placeholder {{{unknown[0]}}}; known: {', '.join(IDENTITY_FIELDS)}"
            )
        entries.append(IdentityEntry(i, str(item.get("topic") or "identity"), turns, names))
    return entries
