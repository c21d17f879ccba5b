"""Speech and interview transcripts: cleaned lines, paragraphs and speaker-labelled turns.

* Speaker labels: an upper-case name at the start of a line followed by ``:`` (``THE PRESIDENT:``,
  ``MR. SMITH:``), or ``Q``/``Q.``/``Q:`` for a question. A turn runs, over any number of paragraphs, until the
  next label; text before the first label (title, date, place) is ignored.
* Labels of any case, as transcription services write them: a name with a time stamp (``Joe Biden: (00:12)``,
  ``Joe Biden (00:12):``, or ``Speaker 1  0:12`` alone on its line); and capitalised names with ``:``
  (``Joe Biden: Folks, ...``, ``Interviewer: ...``) in a file where ``--speaker``'s label starts a line that way.
  Elsewhere ``Remember: ...`` or a run-in heading (``Energy: ...``) is text, not a speaker.
* Press-office labels, at the start of a paragraph and followed by a period: a role (``The President.``,
  ``The Vice President.``, ``The First Lady.``), the audience (``Audience members.``, ``Audience member.``,
  ``Members of the audience.``), or a title and a capitalised name (``Representative Marjorie Taylor Greene.``,
  ``Rep. Greene.``, ``Senator Smith.``, ``Secretary of State Marco A. Rubio.``, ``Mr. Nikoui.``). A sentence that
  only starts like one is no label: ``The President has ...`` (no period), ``Mr. Speaker.``/``Mr. President.`` (an
  address, not a name), ``Mrs. Zarutska, tonight ...`` (a comma).
* Labels are normalised to upper case (``The President.`` is ``THE PRESIDENT``). Audience labels and ``Q`` are
  never the politician; neither is a press-office title-and-name label unless ``--speaker`` names it.
* Time stamps (``12:31 P.M. EDT``) and ``END ...`` lines are dropped, and so is Markdown in ``.md`` files and every
  stage direction (see ``clean``). In a text with lower case, an upper-case line without closing punctuation is a
  section heading of a written message (``OPPORTUNITY FOR VETERANS``) and is dropped too; a label line is not one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from politician_lm.data.prepare.clean import speech_text, strip_markdown, strip_stage_directions
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
    lead: bool = True  # may be taken for the politician when no --speaker label speaks (not audience, Q, Rep. X)

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.paragraphs)


_NOISE_LINE = re.compile(r"^(?:\d{1,2}:\d{2}\s*[AP]\.?M\.?(?:\s+[A-Z]{2,4})?|END\b.*|\*(?:\s*\*){2,})$")
_LABEL = re.compile(r"^(?P<label>[A-Z][A-Z0-9.'’\- ]{0,40}[A-Z.])\s*:\s*(?P<rest>.*)$")
_STAMP = r"\d{1,2}(?::\d{2}){1,2}"
_BRACKETED_STAMP = rf"(?:\({_STAMP}\)|\[{_STAMP}\])"
# "Joe Biden: (00:12)", "Joe Biden (00:12):", "Speaker 1  0:12" (alone on its line) or "Joe Biden:"; upper case too
_TITLED_LABEL = re.compile(
    r"^(?P<label>[A-Z][\w.'’-]*(?:[ \t]+(?:[A-Z][\w.'’-]*|\d+(?![\d:]))){0,4})"
    rf"(?:\s*(?P<before>{_BRACKETED_STAMP})\s*:|\s*:\s*(?P<after>{_BRACKETED_STAMP})?|\s+(?P<alone>{_STAMP}|{_BRACKETED_STAMP})$)"
    r"\s*(?P<rest>.*)$"
)
_QUESTION = re.compile(r"^Q(?:[.:]\s*|\s+|$)(?P<rest>.*)$")
_AUDIENCE = re.compile(r"(?:AUDIENCE|MEMBERS? OF THE AUDIENCE|CROWD|PARTICIPANTS?|PROTEST[EO]RS?)\b")
_PRESS_ROLE = (
    r"The\s+(?:Vice\s+President|President|President-elect|First\s+Lady|Second\s+Gentleman|Second\s+Lady|"
    r"Speaker|Governor|Lieutenant\s+Governor|Mayor|Prime\s+Minister|Chancellor|Moderator|Chairman|Chairwoman)"
)
_PRESS_AUDIENCE = r"(?:Audience\s+members?|Audience|Members?\s+of\s+the\s+audience|Crowd|Participants?|Protest[eo]rs?)"
_PRESS_TITLE = (
    r"(?:Representative|Rep\.|Senator|Sen\.|Governor|Gov\.|Delegate|Mr\.|Mrs\.|Ms\.|Dr\.|"
    r"Secretary(?:\s+of(?:\s+the)?(?:\s+[A-Z][a-z]+){1,3})?)"
)
_PRESS_NAME = r"(?:(?:[A-Z]\.|[A-Z][\w'’-]+)\s+){0,4}[A-Z][\w'’-]+"
_PRESS_LABEL = re.compile(
    rf"^(?:(?P<role>{_PRESS_ROLE}|{_PRESS_AUDIENCE})|(?P<title>{_PRESS_TITLE})\s+(?P<name>{_PRESS_NAME}))"
    r"\.(?:\s+(?P<rest>.*))?$"
)
# "Mr. Speaker." and "Mr. President." address someone; they name no speaker
_ADDRESSED = re.compile(r"(?:Vice\s+)?(?:Speaker|President|Chairman|Chairwoman|Chair|Leader|Prime\s+Minister)")


def norm_label(label: str) -> str:
    return re.sub(r"\s+", " ", label).strip().rstrip(".").upper()


def _titled_label(line: str) -> tuple[str, str, bool] | None:
    """``(label, the rest of the line, time-stamped)`` for a label of any case (``_TITLED_LABEL``)."""
    m = _TITLED_LABEL.match(line)
    if not m or sum(c.isalpha() for c in m.group("label")) < 2:
        return None
    return norm_label(m.group("label")), m.group("rest"), any(m.group(g) for g in ("before", "after", "alone"))


def _known_titled_labels(lines: list[tuple[int, str]], speakers: set[str]) -> set[str]:
    """Labels of any case without a time stamp that count as speakers: none, unless the politician's own label
    (``speakers``) starts a line that way; then every one does, so an interviewer's line never joins the answer.
    (``Energy: ...`` as a run-in heading of a written message is no speaker.)"""
    found = {f[0] for _, line in lines if (f := _titled_label(line)) and not f[2]}
    return found if found & speakers else set()


def _speaker_label(
    line: str, paragraph_start: bool = False, titled: set[str] = frozenset()
) -> tuple[str, str, bool] | None:
    """``(label, the rest of the line, lead)`` when the line starts a turn; press-office labels only when the line
    starts a paragraph; labels of any case when time-stamped or in ``titled``."""
    m = _QUESTION.match(line)
    if m:
        return "Q", m.group("rest"), False
    m = _LABEL.match(line)
    if m and sum(c.isalpha() for c in m.group("label")) >= 2:
        label = norm_label(m.group("label"))
        return label, m.group("rest"), not _AUDIENCE.match(label)
    found = _titled_label(line)
    if found and (found[2] or found[0] in titled):
        return found[0], found[1], not _AUDIENCE.match(found[0])
    m = _PRESS_LABEL.match(line) if paragraph_start else None
    if m and not (m.group("name") and _ADDRESSED.fullmatch(m.group("name"))):
        role = m.group("role")
        label = norm_label(role or f"{m.group('title')} {m.group('name')}")
        return label, m.group("rest") or "", bool(role) and not _AUDIENCE.match(label)
    return None


# a section heading of a written message: upper case, no closing punctuation ("OPPORTUNITY FOR VETERANS", "A STRONG
# DEFENSE: THE GUARDIAN OF PEACE"); not a label line ("THE PRESIDENT:", "MR. SMITH: NO")
_HEADING = re.compile(r"(?=[^a-z]*[A-Z]{2})[^a-z:]+(?::\s*[^a-z:\s]+(?:\s+[^a-z:\s]+)+)?")
_CLOSED = re.compile(r"[.!?:;,…][\"”’')\]]*$")


def _is_heading(line: str, labels: set[str]) -> bool:
    """Whether ``line`` is a section heading; not when it starts with one of ``labels`` (the file's speakers), as
    ``THE PRESIDENT: THANK YOU ALL`` does where ``THE PRESIDENT:`` also labels text in lower case."""
    if not _HEADING.fullmatch(line) or _CLOSED.search(line):
        return False
    m = _LABEL.match(line)
    return not (m and norm_label(m.group("label")) in labels)


def _clean_lines(name: str, text: str) -> list[tuple[int, str]]:
    """Stripped lines; noise lines (time of day, ``END``) and, in a text with lower case, section headings blank."""
    if name.lower().endswith((".md", ".markdown")):
        text = strip_markdown(text)
    lines = [s.strip() for s in text.splitlines()]
    if not any(c.islower() for c in text):
        return [(i, "" if _NOISE_LINE.match(s) else s) for i, s in enumerate(lines, 1)]
    labels = {  # upper-case labels of a turn in lower case, or of a turn that starts on the next line
        norm_label(m.group("label"))
        for s in lines
        if (m := _LABEL.match(s)) and (not m.group("rest") or any(c.islower() for c in m.group("rest")))
    }
    return [(i, "" if _NOISE_LINE.match(s) or _is_heading(s, labels) else s) for i, s in enumerate(lines, 1)]


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


def text_turns(name: str, text: str, speakers: set[str] = frozenset()) -> tuple[list[Turn], list[Paragraph]]:
    """Labelled turns (stage directions stripped) and the paragraphs before the first label, of a transcript's
    ``text``; ``name`` (a file name) tells whether it is Markdown; ``speakers`` (normalised labels) count as labels
    in any case."""
    turns: list[Turn] = []
    pending: list[tuple[int, str]] = []
    header: list[Paragraph] = []
    paragraph_start = True
    lines = _clean_lines(name, text)
    titled = _known_titled_labels(lines, speakers)
    for lineno, line in lines:
        found = _speaker_label(line, paragraph_start, titled)
        paragraph_start = not line
        if found:
            if turns:
                turns[-1].paragraphs = _paragraphs(pending)
            else:
                header = _paragraphs(pending)
            turns.append(Turn(found[0], lineno, len(turns) + 1, lead=found[2]))
            pending = [(lineno, found[1])]
        else:
            pending.append((lineno, line))
    if turns:
        turns[-1].paragraphs = _paragraphs(pending)
    else:
        header = _paragraphs(pending)
    return turns, header


def parse_turns(path: Path, speakers: set[str] = frozenset()) -> tuple[list[Turn], list[Paragraph]]:
    """Labelled turns (stage directions stripped) and the paragraphs before the first label."""
    return text_turns(path.name, read_text(path), speakers)


def read_interview(path: Path, speakers: set[str]) -> list[Turn]:
    """Turns of an interview; consecutive turns of the politician are merged. ``BadFile`` when unusable."""
    turns, _ = parse_turns(path, speakers)
    if not turns:
        raise BadFile(
            f"{path}: no speaker labels found; expected lines like 'THE PRESIDENT:', 'Joe Biden: (00:12)' or 'Q' "
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


def _most_words(turns: Iterable[Turn]) -> set[str]:
    """The label whose turns hold the most words (the first to speak among equals), or none."""
    words: dict[str, int] = {}
    for t in turns:
        words[t.label] = words.get(t.label, 0) + len(t.text.split())
    return {max(words, key=words.__getitem__)} if words else set()


def speech_paragraphs(name: str, text: str, speakers: set[str]) -> list[Paragraph]:
    """A speech's paragraphs, from its ``text`` (``name``: the file name or document id, for Markdown and errors).

    A labelled transcript keeps only the politician's turns, with the labels removed: ``speakers`` if one of them
    speaks, else the label that can lead (not an audience label, ``Q`` or a press-office ``Rep. X``) and says the most
    words (a host's introduction is not the speech), so audience interjections and other speakers never enter it.
    When only such interjections are labelled, every unlabelled paragraph is the politician's and each labelled
    paragraph is dropped alone. Paragraphs are cleaned for speeches (``clean.speech_text``: salutation run-ups and
    cut-off endings go); ``BadFile`` when nothing usable is left.
    """
    turns, header = text_turns(name, text, speakers)
    if not turns:
        paragraphs = header
    else:
        own = speakers if any(t.label in speakers for t in turns) else _most_words(t for t in turns if t.lead)
        if own:
            paragraphs = [p for t in turns if t.label in own for p in t.paragraphs]
        else:
            paragraphs = header + [p for t in turns for p in t.paragraphs[1:]]
    paragraphs = [Paragraph(p.line, cleaned) for p in paragraphs if (cleaned := speech_text(p.text))]
    if not paragraphs:
        raise BadFile(f"{name}: no usable text after removing stage directions and markup")
    return paragraphs


def read_speech(path: Path, speakers: set[str]) -> list[Paragraph]:
    """A speech file's paragraphs (see ``speech_paragraphs``); ``BadFile`` when unusable."""
    return speech_paragraphs(str(path), read_text(path), speakers)
