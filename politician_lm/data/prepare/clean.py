"""Text cleaning for ``prepare``: stage directions, Markdown, posts, and splitting text into sentences.

* Stage directions: any ``[...]``; any ``(...)`` that starts with a stage word (applause, laughter, cheers,
  inaudible, crosstalk, audience, music, ...) or, press-office style, is a capitalised sentence ending in a
  period, e.g. ``(The President exits.)``.
* Markdown (``.md`` files): heading lines, rules, HTML comments and tags are dropped; links keep their text;
  emphasis, quote and list markers are removed.
* Posts: URLs removed, ``@handle`` becomes ``@user``, ``#HashTag`` becomes ``Hash Tag`` (``#MAGA`` stays
  ``MAGA``), HTML entities decoded, whitespace collapsed.
"""

from __future__ import annotations

import html
import re

_STAGE_WORD = re.compile(
    r"(?:applause|laughter|laughs|laughing|cheers|cheering|boos|booing|inaudible|indiscernible|unintelligible|"
    r"cross-?talk|audience|crowd|music|video|pause|silence|technical|off[- ]mic|chant\w*|cough\w*|sic)\b",
    re.I,
)
_PAREN = re.compile(r"\(([^()]*)\)")
_BRACKET = re.compile(r"\[[^\[\]]*\]")
_MD_DROP = re.compile(r"^\s{0,3}(?:#{1,6}(?:\s.*)?|[-=*_]{3,}\s*)$")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPH = re.compile(r"(?<!\w)(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_MD_PREFIX = re.compile(r"^\s{0,3}(?:>\s?|[-*+]\s+|\d+[.)]\s+)+")
_HTML = re.compile(r"<!--.*?-->|</?[a-zA-Z][^>]*>", re.S)


def _is_stage_direction(inner: str) -> bool:
    s = inner.strip()
    return not s or bool(_STAGE_WORD.match(s)) or (s[0].isupper() and s.endswith("."))


def strip_stage_directions(text: str) -> str:
    text = _BRACKET.sub(" ", text)
    text = _PAREN.sub(lambda m: " " if _is_stage_direction(m.group(1)) else m.group(0), text)
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


# -- posts ----------------------------------------------------------------------------------------------------
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
_ABBREV = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "jr",
    "sr",
    "gen",
    "sen",
    "rep",
    "gov",
    "lt",
    "col",
    "sgt",
    "capt",
    "prof",
    "rev",
    "vs",
    "no",
    "mt",
    "ft",
    "hon",
    "pres",
    "sec",
    "dept",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
}
_SENT_END = re.compile(r"[.!?…]+[\"”’')\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Split at ``. ! ?`` followed by a capital, digit or opening quote; titles, initials and ``U.S.`` don't split."""
    out, start = [], 0
    for m in _SENT_END.finditer(text):
        nxt = text[m.end() : m.end() + 1]
        if not (nxt.isupper() or nxt.isdigit() or nxt in "\"“‘'("):
            continue
        if m.group().startswith("."):
            words = text[start : m.start()].split()
            last = words[-1].lower() if words else ""
            if last in _ABBREV or re.fullmatch(r"(?:[a-z]\.)*[a-z]", last):
                continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    return out + [tail] if tail else out
