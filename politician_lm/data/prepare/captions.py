"""Caption files (``.srt``, ``.vtt``, read by webvtt-py) as transcript text for ``--transcripts`` and ``--interviews``.

* One line per cue line; the repeats of rolling captions (each cue starting with the last one's line, as auto
  captions scroll) are dropped, and so are cue tags, word timings and music (``♪ ... ♪``); character references
  (``&amp;``, ``&#39;``) are decoded.
* A paragraph ends at a pause of ``PAUSE_S`` seconds or more between cues.
* Speakers become time-stamped label lines (``Joe Biden (00:00:01):``), which ``transcripts`` reads as any
  transcription-service label: a voice span (``<v Joe Biden>``), and a broadcast speaker change with a name
  (``>> Joe Biden: ...``, ``>> THE PRESIDENT: ...``). A change without one (``>> Four more years!``) is another
  speaker, ``UNNAMED SPEAKER``: it is never taken for the politician named by ``--speaker``.
* Captions that cannot become training text are ``BadFile``, one line each: unreadable, upper case only (broadcast
  captions; the model would learn to shout), or without sentence punctuation (auto captions; a record must be whole
  sentences).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from politician_lm.data.prepare.files import BadFile, read_text

CAPTION_SUFFIXES = (".srt", ".vtt")
PAUSE_S = 2
MIN_SENTENCES_PER_100_WORDS = 1
_CHANGE_LABEL = re.compile(r"^(?P<label>[A-Z][\w.'’-]*(?:[ \t]+[A-Z][\w.'’-]*){0,4})\s*:\s*(?P<rest>.*)$")
_MUSIC = re.compile(r"[♪♫][^♪♫]*[♪♫]|[♪♫]")
_SENTENCE_END = re.compile(r"[.!?…](?:[\"”’')\]]*)(?=\s|$)")


def _stamp(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _read(path: Path):  # noqa: ANN202 - webvtt's own type
    import webvtt

    try:
        if path.suffix.lower() == ".srt":
            return webvtt.from_srt(str(path), encoding="utf-8-sig")
        return webvtt.read(str(path), encoding="utf-8-sig")
    except (webvtt.errors.MalformedFileError, webvtt.errors.MalformedCaptionError, UnicodeDecodeError) as e:
        raise BadFile(f"{path}: not a readable {path.suffix.lower()} caption file ({e})") from None


def caption_text(path: Path) -> str:
    """The captions of ``path`` as transcript text (see the module's notes); ``BadFile`` when unusable."""
    read_text(path)  # the same one-line error as any transcript for a byte that is not UTF-8
    out: list[str] = []
    last_line, last_end, voice = None, None, None
    for cue in _read(path):
        lines = [s for s in (_MUSIC.sub(" ", html.unescape(s)).strip() for s in cue.text.splitlines()) if s]
        fresh = []
        for line in lines:
            if line != last_line:
                fresh.append(line)
            last_line = line
        if fresh and cue.voice and cue.voice != voice:
            out += ["", f"{cue.voice} ({_stamp(cue.start_in_seconds)}):"]
        elif fresh and last_end is not None and cue.start_in_seconds - last_end >= PAUSE_S:
            out.append("")
        voice = cue.voice or voice
        for line in fresh:
            out += _speaker_change(line[2:].strip(), cue.start_in_seconds) if line.startswith(">>") else [line]
        last_end = cue.end_in_seconds
    text = "\n".join(out).strip()
    _check_usable(path, text)
    return text + "\n"


def _speaker_change(line: str, start: int) -> list[str]:
    """The lines a ``>>`` speaker change becomes: a paragraph break, then a time-stamped label and the text."""
    m = _CHANGE_LABEL.match(line)
    if m and sum(c.isalpha() for c in m.group("label")) >= 2:
        return ["", f"{m.group('label')} ({_stamp(start)}): {m.group('rest')}"]
    return ["", f"UNNAMED SPEAKER ({_stamp(start)}): {line}"]


def _check_usable(path: Path, text: str) -> None:
    words = len(text.split())
    if not words:
        raise BadFile(f"{path}: the captions hold no text")
    if not any(c.islower() for c in text):
        raise BadFile(f"{path}: the captions are upper case only; use a transcript in normal case")
    if len(_SENTENCE_END.findall(text)) * 100 < MIN_SENTENCES_PER_100_WORDS * words:
        raise BadFile(
            f"{path}: the captions have no sentence punctuation (auto-generated?), so they cannot be cut into "
            "whole sentences; use punctuated captions or a transcript"
        )
