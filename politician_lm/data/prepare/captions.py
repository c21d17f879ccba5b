"""Caption files (``.srt``, ``.vtt``, read by webvtt-py) as transcript text for ``--transcripts`` and ``--interviews``.

* One line per cue line; the repeats of rolling captions (each cue starting with the last one's line, as auto
  captions scroll) are dropped, and so are cue tags, positioning tags (``{\\an8}``), word timings and music
  (``♪ ... ♪``); character references (``&amp;``, ``&#39;``) are decoded.
* A paragraph ends at a pause of ``PAUSE_S`` seconds or more between cues, where a sentence has ended.
* Speakers become time-stamped label lines (``Joe Biden (00:00:01):``), which ``transcripts`` reads as any
  transcription-service label: a voice span (``<v Joe Biden>``), a cue that starts with a full name (``Maria Lopez:
  ...``, as meeting software writes it), and a broadcast speaker change with a name (``>> Joe Biden: ...``,
  ``>>> THE PRESIDENT: ...``, also in mid-line). A change without a name (``>> Four more years!``, or the dash
  lines of two speakers in one cue: ``- Are you running?`` / ``- I am.``) is ``UNNAMED SPEAKER``, never the
  politician; captions whose changes name no one cannot tell the politician's words from others' (see
  ``transcripts.speech_paragraphs``).
* Captions that cannot become training text are ``BadFile``, one line each: unreadable, spoken text in upper case
  only (broadcast captions; the model would learn to shout), or without sentence punctuation (auto captions; a
  record must be whole sentences).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from politician_lm.data.prepare.clean import SENTENCE_END, unpunctuated
from politician_lm.data.prepare.files import BadFile, read_text

CAPTION_SUFFIXES = (".srt", ".vtt")
UNNAMED = "UNNAMED SPEAKER"
PAUSE_S = 2
_CHANGE = re.compile(r"\s*>{2,}\s*")  # a broadcast speaker change, anywhere in a line
_CHANGE_LABEL = re.compile(r"^(?P<label>[A-Z][\w.'’-]*(?:[ \t]+[A-Z][\w.'’-]*){0,4})\s*:\s*(?P<rest>.*)$")
_NAMED_CUE = re.compile(r"^(?P<label>[A-Z][\w.'’-]+(?:[ \t]+[A-Z][\w.'’-]+){1,3}):\s+(?P<rest>\S.*)$")
_DASH = re.compile(r"^[-–]\s*")
_MARKUP = re.compile(r"[♪♫][^♪♫]*[♪♫]|[♪♫]|\{\\[^}]*\}")
_BRACKETED = re.compile(r"\[[^\]]*\]|\([^)]*\)")


def _stamp(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _cues(path: Path):  # noqa: ANN202 - webvtt's own type
    """The cues of a caption file, from the text ``read_text`` decodes (its one-line error for a byte that is not
    UTF-8, a byte-order mark dropped), read once."""
    import io

    import webvtt

    text = read_text(path)
    try:
        return webvtt.from_buffer(io.StringIO(text), format="srt" if path.suffix.lower() == ".srt" else "vtt")
    except (webvtt.errors.MalformedFileError, webvtt.errors.MalformedCaptionError) as e:
        raise BadFile(f"{path}: not a readable {path.suffix.lower()} caption file ({e})") from None


class _Text:
    """The transcript text being written, and the spoken words alone (for the checks)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.spoken: list[str] = []

    def label(self, name: str, start: int, rest: str = "") -> None:
        self.lines += ["", f"{name} ({_stamp(start)}): {rest}".rstrip()]
        self.spoken.append(rest)

    def say(self, line: str) -> None:
        self.lines.append(line)
        self.spoken.append(line)

    def change(self, line: str, start: int) -> None:
        """A speaker change: named (``Joe Biden: ...``) or not."""
        m = _CHANGE_LABEL.match(line)
        if m and sum(c.isalpha() for c in m.group("label")) >= 2:
            self.label(m.group("label"), start, m.group("rest"))
        else:
            self.label(UNNAMED, start, line)


def caption_text(path: Path) -> str:
    """The captions of ``path`` as transcript text (see the module's notes); ``BadFile`` when unusable."""
    out = _Text()
    last_line, last_end, voice = None, None, None
    for cue in _cues(path):
        lines = [s for s in (_MARKUP.sub(" ", html.unescape(s)).strip() for s in cue.text.splitlines()) if s]
        fresh = []
        for line in lines:
            if line != last_line:
                fresh.append(line)
            last_line = line
        if not fresh:
            continue
        start = cue.start_in_seconds
        if cue.voice and cue.voice != voice:
            out.label(cue.voice, start)
        elif last_end is not None and start - last_end >= PAUSE_S and SENTENCE_END.search(out.lines[-1] or "."):
            out.lines.append("")
        voice = cue.voice or voice
        dialogue = sum(bool(_DASH.match(line)) for line in fresh) >= 2  # "- Are you running?" / "- I am."
        for i, line in enumerate(fresh):
            named = _NAMED_CUE.match(line) if i == 0 and not cue.voice else None
            if dialogue and _DASH.match(line):
                out.change(_DASH.sub("", line), start)
            elif named:
                out.label(named.group("label"), start, named.group("rest"))
            else:
                before, *changes = _CHANGE.split(line)
                if before:
                    out.say(before)
                for part in changes:
                    out.change(part, start)
        last_end = cue.end_in_seconds
    _check_usable(path, " ".join(out.spoken))
    return "\n".join(out.lines).strip() + "\n"


def _check_usable(path: Path, spoken: str) -> None:
    spoken = _BRACKETED.sub(" ", spoken)  # [APPLAUSE], (CHEERING): no one's words
    if not spoken.split():
        raise BadFile(f"{path}: the captions hold no text")
    if not any(c.islower() for c in spoken):
        raise BadFile(f"{path}: the captions are upper case only; use a transcript in normal case")
    if unpunctuated(spoken):
        raise BadFile(
            f"{path}: the captions have no sentence punctuation (auto-generated?), so they cannot be cut into "
            "whole sentences; use punctuated captions or a transcript"
        )
