"""Speech and interview transcripts: cleaned lines, paragraphs and speaker-labelled turns.

* Speaker labels (see ``labels``): ``THE PRESIDENT:``, ``Q``, ``Joe Biden (00:12):``, ``The President.``,
  ``Mr. BIDEN.``, ... A turn runs, over any number of paragraphs, until the next label; text before the first label
  (title, date, place) is ignored. A paragraph starts after a blank line, or at an indented line where other lines
  are not indented (hearing transcripts).
* Times of day, ``END ...`` lines, section headings, Markdown in ``.md`` files and every stage direction (see
  ``clean``) are dropped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from politician_lm.data.prepare.captions import CAPTION_SUFFIXES, UNNAMED, caption_text
from politician_lm.data.prepare.clean import fix_text, speech_text, strip_markdown, strip_stage_directions, unpunctuated
from politician_lm.data.prepare.files import BadFile, read_text
from politician_lm.data.prepare.labels import (
    NOISE_LINE,
    glued_heading,
    is_heading,
    is_title,
    norm_label,
    run_in_headings,
    speaker_label,
    speech_labels,
    titled_speakers,
    unnamed_speakers,
)

log = logging.getLogger(__name__)
_ENDS_SENTENCE = re.compile(r"[.!?…:—-][\"”’')\]]*$")  # a sentence (or a label line, or a cut-off) ended here

__all__ = [
    "Paragraph",
    "Turn",
    "norm_label",
    "parse_turns",
    "read_interview",
    "read_speech",
    "read_transcript",
    "speech_paragraphs",
]


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


def _clean_lines(name: str, text: str) -> tuple[list[tuple[int, str]], list[bool]]:
    """Stripped lines of ``text`` repaired (``clean.fix_text``; noise lines and, in a text with lower case, section
    headings blank) and which lines start a paragraph by indentation (an indented line where other lines are not,
    as hearing transcripts print them)."""
    text = fix_text(text)
    if name.lower().endswith((".md", ".markdown")):
        text = strip_markdown(text)
    raw = text.splitlines()
    lines = [s.strip() for s in raw]
    indented = [bool(s) and s[0] in " \t" for s in raw]
    flush = any(not ind and line for ind, line in zip(indented, lines))
    starts = [ind and flush for ind in indented]
    labels = speech_labels(lines) if any(c.islower() for c in text) else None
    noise = [bool(NOISE_LINE.match(s)) or (labels is not None and is_heading(s, labels)) for s in lines]
    return [(i, "" if bad else s) for i, (s, bad) in enumerate(zip(lines, noise), 1)], starts


def _paragraphs(lines: list[tuple[int, str]]) -> list[Paragraph]:
    """Paragraphs of the lines between blank lines; a heading glued to a sentence (``labels.glued_heading``) is a
    paragraph of its own."""
    out: list[Paragraph] = []
    buf: list[tuple[int, str]] = []
    heading = False  # the last line in buf is a glued heading
    for lineno, line in [*lines, (0, "")]:
        glued = bool(line and buf and glued_heading(buf[-1][1], line))
        if line and not glued and not heading:
            buf.append((lineno, line))
            continue
        if buf:
            text = strip_stage_directions(" ".join(s for _, s in buf))
            if text:
                out.append(Paragraph(buf[0][0], text))
        buf, heading = ([(lineno, line)] if line else []), glued
    return out


_DASHES = re.compile(r"^(?:—|--)+\s*")
_ENDED = re.compile(r"[.!?…:;][\"”’')\]]*$")  # a sentence (or a list's introduction or item) ended here


def _join_broken(paragraphs: list[Paragraph]) -> list[Paragraph]:
    """Paragraphs with a sentence broken across two joined: one that does not end a sentence (``... and the——``,
    ``... may live``) and the next that goes on in lower case (``——the rest``, ``free from ...``). The next
    one's dashes go when the first ends in one (``the— the rest``)."""
    out: list[Paragraph] = []
    for p in paragraphs:
        rest = _DASHES.sub("", p.text)
        if out and rest[:1].islower() and not _ENDED.search(out[-1].text):
            text = rest if out[-1].text.endswith(("—", "--")) else p.text
            out[-1] = Paragraph(out[-1].line, f"{out[-1].text} {text}")
        else:
            out.append(p)
    return out


def text_turns(name: str, text: str, speakers: set[str] = frozenset()) -> tuple[list[Turn], list[Paragraph]]:
    """Labelled turns (stage directions stripped) and the paragraphs before the first label, of a transcript's
    ``text``; ``name`` (a file name) tells whether it is Markdown; ``speakers`` (normalised labels) decide which
    labels of any case count (``labels.titled_speakers``)."""
    turns: list[Turn] = []
    pending: list[tuple[int, str]] = []
    header: list[Paragraph] = []
    paragraph_start = True
    lines, indented = _clean_lines(name, text)
    titled = titled_speakers([line for _, line in lines], speakers)
    after_sentence = True
    for (lineno, line), starts in zip(lines, indented):
        found = speaker_label(line, paragraph_start or starts, titled, after_sentence)
        paragraph_start = not line
        after_sentence = not line or bool(_ENDS_SENTENCE.search(line))
        if found:
            if turns:
                turns[-1].paragraphs = _paragraphs(pending)
            else:
                header = _paragraphs(pending)
            turns.append(Turn(found.label, lineno, len(turns) + 1, lead=found.lead))
            pending = [(lineno, found.rest)]
        else:
            pending.append((lineno, line))
    if turns:
        turns[-1].paragraphs = _paragraphs(pending)
    else:
        header = _paragraphs(pending)
    return turns, header


def read_transcript(path: Path) -> str:
    """A transcript file's text: captions (``.srt``, ``.vtt``) as transcript text (``captions``), else as read."""
    return caption_text(path) if path.suffix.lower() in CAPTION_SUFFIXES else read_text(path)


def parse_turns(path: Path, speakers: set[str] = frozenset()) -> tuple[list[Turn], list[Paragraph]]:
    """Labelled turns (stage directions stripped) and the paragraphs before the first label."""
    return text_turns(path.name, read_transcript(path), speakers)


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
    Three or more upper-case labels used once each that name no person (``ENERGY: ...``, ``EDUCATION: ...``) are
    run-in section headings: every paragraph is kept, without them.
    When only such interjections are labelled, every unlabelled paragraph is the politician's and each labelled
    paragraph is dropped alone. Paragraphs are cleaned for speeches (``clean.speech_text``: salutation run-ups and
    cut-off endings go), and titles, datelines and headings in title case dropped (``labels.is_title``); ``BadFile``
    when nothing usable is left, or when it is not punctuated (``clean.unpunctuated``).
    """
    turns, header = text_turns(name, text, speakers)
    if not speakers and (unnamed := unnamed_speakers(text.splitlines())):
        log.warning(
            f"{name}: lines start with {', '.join(repr(f'{s.title()}:') for s in unnamed[:4])}, read as the speech's "
            "text; if they name speakers, set --speaker to the politician's label so that only their words are kept"
        )
    if not turns:
        paragraphs = header
    elif not header and all(t.label == UNNAMED for t in turns):
        raise BadFile(
            f"{name}: its speaker changes (>>) name no one, so the politician's words cannot be told from others'; "
            "name them (>> Joe Biden: ...) or use a transcript"
        )
    elif not any(t.label in speakers for t in turns) and run_in_headings([t.label for t in turns]):
        paragraphs = header + [p for t in turns for p in t.paragraphs]
    else:
        own = speakers if any(t.label in speakers for t in turns) else _most_words(t for t in turns if t.lead)
        if own:
            paragraphs = [p for t in turns if t.label in own for p in t.paragraphs]
        else:
            paragraphs = header + [p for t in turns for p in t.paragraphs[1:]]
    paragraphs = [
        Paragraph(p.line, c) for p in _join_broken(paragraphs) if (c := speech_text(p.text)) and not is_title(c)
    ]
    if not paragraphs:
        raise BadFile(f"{name}: no usable text after removing stage directions and markup")
    if unpunctuated(" ".join(p.text for p in paragraphs)):
        raise BadFile(
            f"{name}: the text has almost no sentence punctuation (speech-to-text output?), so it cannot be cut into "
            "whole sentences; punctuate it first"
        )
    return paragraphs


def read_speech(path: Path, speakers: set[str]) -> list[Paragraph]:
    """A speech file's paragraphs (see ``speech_paragraphs``); ``BadFile`` when unusable."""
    return speech_paragraphs(str(path), read_transcript(path), speakers)
