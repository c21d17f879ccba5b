"""Speech and interview transcripts: cleaned lines, paragraphs and speaker-labelled turns.

* Speaker labels: an upper-case name at the start of a line followed by ``:`` (``THE PRESIDENT:``,
  ``MR. SMITH:``), or ``Q``/``Q.``/``Q:`` for a question. A turn runs, over any number of paragraphs, until the
  next label; text before the first label (title, date, place) is ignored.
* Time stamps (``12:31 P.M. EDT``) and ``END ...`` lines are dropped, and so is Markdown in ``.md`` files and every
  stage direction (see ``clean``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from politician_lm.data.prepare.clean import strip_markdown, strip_stage_directions
from politician_lm.data.prepare.files import BadFile, read_text


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


_NOISE_LINE = re.compile(r"^(?:\d{1,2}:\d{2}\s*[AP]\.?M\.?(?:\s+[A-Z]{2,4})?|END\b.*|\*(?:\s*\*){2,})$")
_LABEL = re.compile(r"^(?P<label>[A-Z][A-Z0-9.'’\- ]{0,40}[A-Z.])\s*:\s*(?P<rest>.*)$")
_QUESTION = re.compile(r"^Q(?:[.:]\s*|\s+|$)(?P<rest>.*)$")


def norm_label(label: str) -> str:
    return re.sub(r"\s+", " ", label).strip().rstrip(".").upper()


def _speaker_label(line: str) -> tuple[str, str] | None:
    """``(label, the rest of the line)`` when the line starts a turn."""
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
        found = _speaker_label(line)
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
        raise BadFile(
            f"{path}: no speaker labels found; expected lines like 'THE PRESIDENT:' or 'Q' "
            "(a speech without labels goes to --transcripts)"
        )
    if not any(t.label in speakers for t in turns):
        seen = ", ".join(dict.fromkeys(t.label for t in turns))
        raise BadFile(
            f"{path}: speaker {'/'.join(sorted(speakers))!r} never speaks (labels found: {seen}); set --speaker"
        )
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
