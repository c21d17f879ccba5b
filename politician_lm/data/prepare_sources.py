"""Readers for ``politician-lm prepare``: speech and interview transcripts, tables of posts, identity templates.

Everything here is text work without a tokenizer, so ``prepare`` can read and validate every input before it
loads anything heavy. Problems raise ``UserError`` naming ``file:line``; ``BadLine`` (one record) and ``BadFile``
(one whole file) are the kinds that ``--skip_bad`` skips and counts instead.

Cleaning rules:

* Stage directions: any ``[...]``; any ``(...)`` that starts with a stage word (applause, laughter, cheers,
  inaudible, crosstalk, audience, music, ...) or, press-office style, is a capitalised sentence ending in a
  period, e.g. ``(The President exits.)``. Time stamps (``12:31 P.M. EDT``) and ``END ...`` lines are dropped.
* Markdown (``.md`` files): heading lines, rules, HTML comments and tags are dropped; links keep their text;
  emphasis, quote and list markers are removed.
* Posts: URLs removed, ``@handle`` becomes ``@user``, ``#HashTag`` becomes ``Hash Tag`` (``#MAGA`` stays
  ``MAGA``), HTML entities decoded, whitespace collapsed; retweets (``RT @...``) are someone else's words and
  are dropped.
* Speaker labels: an upper-case name at the start of a line followed by ``:`` (``THE PRESIDENT:``,
  ``MR. SMITH:``), or ``Q``/``Q.``/``Q:`` for a question. A turn runs, over any number of paragraphs, until the
  next label; text before the first label (title, date, place) is ignored.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from politician_lm.errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
TABLE_SUFFIXES = (".csv", ".json", ".jsonl")


class BadLine(UserError):
    """One record or line is unusable; ``skip_bad`` drops it (reason ``bad_line``)."""


class BadFile(UserError):
    """A whole transcript is unusable (encoding, no text, no speaker); ``skip_bad`` drops it (``bad_file``)."""


# -- files ----------------------------------------------------------------------------------------------------
def expand(paths: list[str] | str | None, suffixes: tuple[str, ...], flag: str, skip: Path | None = None) -> list[Path]:
    """Files named directly or found (recursively, sorted) in the folders named; UserError for missing ones.

    Inside folders, hidden files and folders and anything under ``skip`` (the output folder) are left out.
    """
    out: list[Path] = []
    skip = skip.resolve() if skip is not None else None
    for p in [paths] if isinstance(paths, str) else paths or []:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
                           and not any(part.startswith(".") for part in f.relative_to(path).parts)
                           and (skip is None or not f.resolve().is_relative_to(skip)))
            if not found:
                raise UserError(f"{path}: folder holds no {'/'.join(suffixes)} files (given to --{flag})")
            out += found
        elif path.is_file():
            if path.suffix.lower() not in suffixes:
                raise UserError(f"{path}: --{flag} takes {'/'.join(suffixes)} files or folders of them")
            out.append(path)
        else:
            raise UserError(f"{path}: no such file or folder (given to --{flag})")
    return list(dict.fromkeys(out))


def read_text(path: Path) -> str:
    """The file as UTF-8 text; ``BadFile`` naming the line of the first undecodable byte."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the file ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BadFile(f"{path}:{line}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None


# -- cleaning -------------------------------------------------------------------------------------------------
_STAGE_WORD = re.compile(
    r"(?:applause|laughter|laughs|laughing|cheers|cheering|boos|booing|inaudible|indiscernible|unintelligible|"
    r"cross-?talk|audience|crowd|music|video|pause|silence|technical|off[- ]mic|chant\w*|cough\w*|sic)\b", re.I)
_PAREN = re.compile(r"\(([^()]*)\)")
_BRACKET = re.compile(r"\[[^\[\]]*\]")
_NOISE_LINE = re.compile(r"^(?:\d{1,2}:\d{2}\s*[AP]\.?M\.?(?:\s+[A-Z]{2,4})?|END\b.*|\*(?:\s*\*){2,})$")
_MD_DROP = re.compile(r"^\s{0,3}(?:#{1,6}(?:\s.*)?|[-=*_]{3,}\s*)$")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPH = re.compile(r"(?<!\w)(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_MD_PREFIX = re.compile(r"^\s{0,3}(?:>\s?|[-*+]\s+|\d+[.)]\s+)+")
_HTML = re.compile(r"<!--.*?-->|</?[a-zA-Z][^>]*>", re.S)


def _is_stage(inner: str) -> bool:
    s = inner.strip()
    return not s or bool(_STAGE_WORD.match(s)) or (s[0].isupper() and s.endswith("."))


def strip_stage_directions(text: str) -> str:
    text = _BRACKET.sub(" ", text)
    text = _PAREN.sub(lambda m: " " if _is_stage(m.group(1)) else m.group(0), text)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" +([,.;:!?])", r"\1", text)


def strip_markdown(text: str) -> str:
    text = _HTML.sub(" ", text)
    lines = []
    for line in text.splitlines():
        if _MD_DROP.match(line):
            lines.append("")
            continue
        line = _MD_PREFIX.sub("", _MD_LINK.sub(r"\1", line))
        prev = None
        while prev != line:
            prev, line = line, _MD_EMPH.sub(r"\2", line)
        lines.append(line)
    return "\n".join(lines)


_URL = re.compile(r"\b(?:https?://|www\.)\S+|\bpic\.twitter\.com/\S+", re.I)
_HANDLE = re.compile(r"(?<![\w@])@\w{1,30}")
_HASHTAG = re.compile(r"(?<![\w#])#(\w+)")


def _unwrap_hashtag(m: re.Match) -> str:
    tag = m.group(1)
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", tag) if any(c.islower() for c in tag) else tag


def clean_post(text: str) -> str:
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    text = _HANDLE.sub("@user", text)
    text = _HASHTAG.sub(_unwrap_hashtag, text)
    return re.sub(r" +([,.;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip()


# -- sentences ------------------------------------------------------------------------------------------------
_ABBREV = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "sen", "rep", "gov", "lt", "col", "sgt", "capt",
           "prof", "rev", "vs", "no", "mt", "ft", "hon", "pres", "sec", "dept", "jan", "feb", "mar", "apr", "jun",
           "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
_SENT_END = re.compile(r"[.!?…]+[\"”’')\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Split at ``. ! ?`` followed by a capital, digit or opening quote; titles, initials and ``U.S.`` don't split."""
    out, start = [], 0
    for m in _SENT_END.finditer(text):
        nxt = text[m.end():m.end() + 1]
        if not (nxt.isupper() or nxt.isdigit() or nxt in "\"“‘'("):
            continue
        if m.group().startswith("."):
            words = text[start:m.start()].split()
            last = words[-1].lower() if words else ""
            if last in _ABBREV or re.fullmatch(r"(?:[a-z]\.)*[a-z]", last):
                continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    return out + [tail] if tail else out


# -- transcripts ----------------------------------------------------------------------------------------------
@dataclass
class Paragraph:
    line: int
    text: str


@dataclass
class Turn:
    label: str  # normalised: upper case, single spaces, no trailing period; "Q" for questions
    line: int
    number: int  # 1-based position among the file's labelled turns
    paragraphs: list[Paragraph] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.paragraphs)


_LABEL = re.compile(r"^(?P<label>[A-Z][A-Z0-9.'’\- ]{0,40}[A-Z.])\s*:\s*(?P<rest>.*)$")
_QUESTION = re.compile(r"^Q(?:[.:]\s*|\s+|$)(?P<rest>.*)$")


def norm_label(label: str) -> str:
    return re.sub(r"\s+", " ", label).strip().rstrip(".").upper()


def _label(line: str) -> tuple[str, str] | None:
    m = _QUESTION.match(line)
    if m:
        return "Q", m.group("rest")
    m = _LABEL.match(line)
    if m and sum(c.isalpha() for c in m.group("label")) >= 2:
        return norm_label(m.group("label")), m.group("rest")
    return None


def _clean_lines(path: Path) -> list[tuple[int, str]]:
    text = read_text(path)
    if path.suffix.lower() in (".md", ".markdown"):
        text = strip_markdown(text)
    return [(i, "" if _NOISE_LINE.match(s.strip()) else s.strip()) for i, s in enumerate(text.splitlines(), 1)]


def _paragraphs(lines: list[tuple[int, str]]) -> list[Paragraph]:
    out: list[Paragraph] = []
    buf: list[tuple[int, str]] = []
    for lineno, line in [*lines, (0, "")]:
        if line:
            buf.append((lineno, line))
            continue
        if buf:
            text = strip_stage_directions(" ".join(s for _, s in buf))
            if text:
                out.append(Paragraph(buf[0][0], text))
            buf = []
    return out


def parse_turns(path: Path) -> tuple[list[Turn], list[Paragraph]]:
    """Labelled turns (stage directions stripped) and the paragraphs before the first label."""
    turns: list[Turn] = []
    pending: list[tuple[int, str]] = []
    header: list[Paragraph] = []
    for lineno, line in _clean_lines(path):
        found = _label(line)
        if found:
            if turns:
                turns[-1].paragraphs = _paragraphs(pending)
            else:
                header = _paragraphs(pending)
            turns.append(Turn(found[0], lineno, len(turns) + 1))
            pending = [(lineno, found[1])]
        else:
            pending.append((lineno, line))
    if turns:
        turns[-1].paragraphs = _paragraphs(pending)
    else:
        header = _paragraphs(pending)
    return turns, header


def read_interview(path: Path, speakers: set[str]) -> list[Turn]:
    """Turns of an interview; consecutive turns of the politician are merged. ``BadFile`` when unusable."""
    turns, _ = parse_turns(path)
    if not turns:
        raise BadFile(f"{path}: no speaker labels found; expected lines like 'THE PRESIDENT:' or 'Q' "
                      "(a speech without labels goes to --transcripts)")
    if not any(t.label in speakers for t in turns):
        seen = ", ".join(dict.fromkeys(t.label for t in turns))
        raise BadFile(f"{path}: speaker {'/'.join(sorted(speakers))!r} never speaks (labels found: {seen}); set --speaker")
    merged: list[Turn] = []
    for t in turns:
        if merged and t.label in speakers and merged[-1].label in speakers:
            merged[-1].paragraphs += t.paragraphs
        else:
            merged.append(t)
    if not any(t.paragraphs for t in merged if t.label in speakers):
        raise BadFile(f"{path}: the speaker's turns hold no usable text after removing stage directions")
    return merged


def read_speech(path: Path, speakers: set[str]) -> list[Paragraph]:
    """A speech's paragraphs. A labelled transcript keeps only the politician's turns (``speakers`` if one of
    them speaks, else the first label), so audience interjections never enter the speech."""
    turns, header = parse_turns(path)
    if turns:
        own = speakers if any(t.label in speakers for t in turns) else {turns[0].label}
        paragraphs = [p for t in turns if t.label in own for p in t.paragraphs]
    else:
        paragraphs = header
    if not paragraphs:
        raise BadFile(f"{path}: no usable text after removing stage directions and markup")
    return paragraphs


# -- tables ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
    loc: str  # "posts.csv:12" or "quotes.json: row 3", for error messages
    meta: dict[str, int]  # {"line": 12} or {"row": 3}, kept on the record
    values: dict[str, Any]


def placeholders(template: str, what: str) -> list[str]:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise UserError(f"{what}: malformed template {template!r} ({e}); write placeholders as {{column}}") from None
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise UserError(f"{what}: placeholder {{{bad[0]}}} in {template!r} must be a column name such as {{topic}}")
    return names


def read_table(path: Path, skip_bad: bool) -> tuple[list[Row], set[str], int]:
    """Rows of a CSV, JSON (a list of objects) or JSONL file, the column names seen, and the bad lines skipped."""
    suffix = path.suffix.lower()
    rows: list[Row] = []
    bad = 0

    def fail(msg: str) -> None:
        nonlocal bad
        if not skip_bad:
            raise BadLine(msg)
        bad += 1

    if suffix == ".jsonl":
        try:
            raw_lines = path.read_bytes().splitlines()
        except OSError as e:
            raise UserError(f"{path}: cannot read the file ({e.strerror or e})") from None
        for lineno, raw in enumerate(raw_lines, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                fail(f"{path}:{lineno}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                fail(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                continue
            rows.append(Row(f"{path}:{lineno}", {"line": lineno}, obj))
    elif suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: a .json table must be a list of objects (or use .jsonl, one object per line)")
        for i, obj in enumerate(data, 1):
            if isinstance(obj, dict):
                rows.append(Row(f"{path}: row {i}", {"row": i}, obj))
            else:
                fail(f"{path}: row {i}: expected a JSON object, got {type(obj).__name__}")
    else:
        reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
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
            raise UserError(f"{path}: empty CSV; the first line must name the columns")
        return rows, set(header), bad
    return rows, {k for r in rows for k in r.values}, bad


# -- identity -------------------------------------------------------------------------------------------------
IDENTITY_FIELDS = ("name", "first_name", "short_name", "title", "party", "born", "birth_date", "birthplace",
                   "offices_list", "first_office", "latest_office", "education_list", "spouse", "spouse_name",
                   "children_list", "signature_phrase")


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


def load_profile_file(spec: str) -> dict[str, Any]:
    """A profile YAML by path, or by name under ``data/profiles``."""
    path = Path(spec)
    if not path.is_file() and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", spec):
        path = Path("data/profiles") / f"{spec}.yaml"
    if not path.is_file():
        raise UserError(f"{spec}: no such profile; pass a YAML path such as data/profiles/biden.yaml")
    try:
        profile = yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not a readable YAML profile") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("name"), str):
        raise UserError(f"{path}: a profile needs at least a 'name' string")
    return profile


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
        if not isinstance(item, dict) or not isinstance(raw, list) or not raw or not all(
                isinstance(t, dict) and isinstance(t.get("question"), str) and isinstance(t.get("answer"), str)
                and t["question"].strip() and t["answer"].strip() for t in raw):
            raise UserError(f"{where}: needs non-empty 'question' and 'answer' strings, or 'turns': a list of them")
        turns = [(t["question"], t["answer"]) for t in raw]
        names = {n for q, a in turns for n in placeholders(q, where) + placeholders(a, where)}
        unknown = sorted(names - set(IDENTITY_FIELDS))
        if unknown:
            raise UserError(f"{where} ({turns[0][0]!r}): unknown placeholder {{{unknown[0]}}}; "
                            f"known: {', '.join(IDENTITY_FIELDS)}")
        entries.append(IdentityEntry(i, str(item.get("topic") or "identity"), turns, names))
    return entries
