"""Speaker labels at the start of a transcript's lines, and the lines that are no one's speech.

* Upper-case names followed by ``:`` (``THE PRESIDENT:``, ``MR. SMITH:``, ``REPORTER 2:``), or ``Q``/``Q.``/``Q:``
  for a question (not ``Q and A`` wrapped onto a new line).
* Labels of any case, as transcription services write them: a name with a time stamp (``Joe Biden: (00:12)``,
  ``Joe Biden (00:12):``, ``Speaker 1: (03:12)``, ``Lester Holt (NBC) (00:03):`` or ``Speaker 1  0:12`` alone on
  its line); and capitalised names with ``:`` and no stamp (``Joe Biden: Folks, ...``, ``Interviewer: ...``) in a
  file where ``--speaker``'s own label is written in that case. Discourse words never are (``First: ...``,
  ``Look: ...``), and elsewhere ``Remember: ...`` or a run-in heading (``Energy: ...``) is text.
* Press-office and Congressional Record labels, at the start of a paragraph (after a blank line, or an indented
  line as hearings print them) and followed by a period: a role (``The President.``, ``The Vice President.``,
  ``The CHAIRMAN.``, ``The SPEAKER pro tempore.``, ``The PRESIDING OFFICER.``), the audience (``Audience
  members.``), or a title and a capitalised name (``Representative Marjorie Taylor Greene.``, ``Rep. Greene.``,
  ``Mr. BIDEN.``, ``Chairman SMITH.``, ``Vice President Harris.``, ``Press Secretary Psaki.``). A sentence that only
  starts like one is no label: ``The President has ...`` (no period), ``Mr. Speaker.`` (an address, not a name).
* Labels are normalised to upper case. Audience labels and ``Q`` are never the politician; neither is a title-and-
  name label unless ``--speaker`` names it.
* No one's speech: times of day (``12:31 P.M. EDT``, ``2:14 p.m.``), ``END ...`` lines, and, in a text with lower
  case, upper-case section headings of written messages (``OPPORTUNITY FOR VETERANS``) unless they start with a
  label the file also uses for text in lower case.
"""

from __future__ import annotations

import re
from typing import NamedTuple

NOISE_LINE = re.compile(r"^(?:\d{1,2}:\d{2}\s*[AaPp]\.?[Mm]\.?(?:\s+[A-Z]{2,4})?|END\b.*|\*(?:\s*\*){2,})$")
_LABEL = re.compile(r"^(?P<label>[A-Z][A-Z0-9.'’\- ]{0,40}(?:[A-Z.]|\s\d{1,2}))\s*:\s*(?P<rest>.*)$")
_STAMP = r"\d{1,2}(?::\d{2}){1,2}"
_BRACKETED_STAMP = rf"(?:\({_STAMP}\)|\[{_STAMP}\])"
_TITLED_LABEL = re.compile(
    r"^(?P<label>[A-Z][\w.'’-]*(?:[ \t]+(?:[A-Z][\w.'’-]*|\d+(?!\d|:\d))){0,4})"
    r"(?:[ \t]*\([A-Z][A-Za-z .&'-]{0,30}\))?"  # an affiliation: "Lester Holt (NBC):"
    rf"(?:\s*(?P<before>{_BRACKETED_STAMP})\s*:|\s*:\s*(?P<after>{_BRACKETED_STAMP})?|\s+(?P<alone>{_STAMP}|{_BRACKETED_STAMP})$)"
    r"\s*(?P<rest>.*)$"
)
# "First: we build ..." and "Look: ..." start a point, not a speaker
_DISCOURSE = frozenset(
    """FIRST SECOND THIRD FOURTH FIFTH SIXTH FIRSTLY SECONDLY THIRDLY FINALLY LASTLY NEXT THEN NOW SO LOOK LISTEN
    REMEMBER FOLKS EXAMPLE NOTE ONE TWO THREE FOUR FIVE PS P.S""".split()
) | {"NUMBER ONE", "NUMBER TWO", "NUMBER THREE", "BOTTOM LINE", "THE BOTTOM LINE", "FOR EXAMPLE", "STEP ONE"}
_QUESTION = re.compile(r"^Q(?:(?P<mark>[.:])\s*|\s+(?![a-z&])|$)(?P<rest>.*)$")
# labels that are never the politician's turn: an unnamed caption speaker, a transcript's editorial notes
_NEVER_LEAD = frozenset({"UNNAMED SPEAKER", "UPDATE", "NOTE", "EDITOR'S NOTE", "EDITORS NOTE", "CORRECTION"})
# the people who introduce or question a politician: a labelled speech is never theirs ("HOST: Please welcome ...")
_HOST = re.compile(
    r"(?:THE )?(?:CO-?)?(?:HOST|MODERATOR|ANNOUNCER|ANCHOR|INTERVIEWER|NARRATOR|EMCEE|MC|INTRODUCER|REPORTER|"
    r"JOURNALIST|QUESTIONER|PRESENTER)\b"
)
# a person's title or role: "SENATOR WARREN:", "MS. ROE:", "THE PRESIDENT:", "SPEAKER 2:" are people, not headings
_PERSON = re.compile(
    r"(?:THE\s+)?(?:MR|MRS|MS|DR|SEN|SENATOR|REP|REPRESENTATIVE|GOV|GOVERNOR|PRESIDENT|VICE PRESIDENT|PRESIDENT-ELECT|"
    r"SECRETARY|SPEAKER|CHAIR\w*|AMBASSADOR|LEADER|PRIME MINISTER|MAYOR|FIRST LADY|CHANCELLOR|JUDGE|JUSTICE)\b"
)
_AUDIENCE = re.compile(r"(?:AUDIENCE|MEMBERS? OF THE AUDIENCE|CROWD|PARTICIPANTS?|PROTEST[EO]RS?)\b")


def _either_case(*words: str) -> str:
    """Each role as printed by a press office (``Chairman``) and by the Congressional Record (``CHAIRMAN``)."""
    return "|".join(f"{w}|{w.upper()}" for w in words)


_PRESS_ROLE = (
    r"The\s+(?:"
    + _either_case(
        r"Vice\s+President",
        "President",
        "President-elect",
        r"First\s+Lady",
        r"Second\s+Gentleman",
        r"Second\s+Lady",
        "Speaker",
        "Governor",
        r"Lieutenant\s+Governor",
        "Mayor",
        r"Prime\s+Minister",
        "Chancellor",
        "Moderator",
        "Chairman",
        "Chairwoman",
        "Chair",
        r"Acting\s+Chair",
        r"Presiding\s+Officer",
        "Clerk",
        r"Chief\s+Justice",
    )  # fmt: skip
    + r")(?:\s+pro\s+tempore)?"
)
_PRESS_AUDIENCE = r"(?:Audience\s+members?|Audience|Members?\s+of\s+the\s+audience|Crowd|Participants?|Protest[eo]rs?)"
_PRESS_TITLE = (
    r"(?:Representative|Rep\.|Senator|Sen\.|Governor|Gov\.|Delegate|Mr\.|Mrs\.|Ms\.|Dr\.|Vice\s+President|"
    r"Press\s+Secretary|Chairman|Chairwoman|Ambassador|Speaker|Leader|"
    r"Secretary(?:\s+of(?:\s+the)?(?:\s+[A-Z][a-z]+){1,3})?)"
)
_PRESS_NAME = r"(?:(?:[A-Z]\.|[A-Z][\w'’-]+)\s+){0,4}[A-Z][\w'’-]+"
_PRESS_LABEL = re.compile(
    rf"^(?:(?P<role>{_PRESS_ROLE}|{_PRESS_AUDIENCE})|(?P<title>{_PRESS_TITLE})\s+(?P<name>{_PRESS_NAME}))"
    r"\.(?:\s+(?P<rest>.*))?$"
)
# "Mr. Speaker." and "Mr. President." address someone; they name no speaker
_ADDRESSED = re.compile(r"(?:Vice\s+)?(?:Speaker|President|Chairman|Chairwoman|Chair|Leader|Prime\s+Minister)")
# a section heading of a written message: upper case, no closing punctuation ("OPPORTUNITY FOR VETERANS", "A STRONG
# DEFENSE: THE GUARDIAN OF PEACE"); not a label line ("THE PRESIDENT:", "MR. SMITH: NO")
_HEADING = re.compile(r"(?=[^a-z]*[A-Z]{2})[^a-z:]+(?::\s*[^a-z:\s]+(?:\s+[^a-z:\s]+)+)?")
_CLOSED = re.compile(r"[.!?:;,…][\"”’')\]]*$")
_FINISHED = re.compile(r"[.!?…][\"”’')\]]*$")  # a sentence ended here


class Label(NamedTuple):
    label: str  # normalised: upper case, single spaces, no trailing period; "Q" for questions
    rest: str  # the line's text after the label
    lead: bool  # may be taken for the politician when no --speaker label speaks (not audience, Q, Rep. X)


def norm_label(label: str) -> str:
    return re.sub(r"\s+", " ", label).strip().rstrip(".").upper()


def is_audience(label: str) -> bool:
    return bool(_AUDIENCE.match(label))


def can_lead(label: str) -> bool:
    """Whether a label may be taken for the politician when no ``--speaker`` label speaks: not the audience, an
    editorial note or a host, moderator or reporter."""
    return not is_audience(label) and label not in _NEVER_LEAD and not _HOST.match(label)


def run_in_headings(labels: list[str]) -> bool:
    """Whether a speech's upper-case labels (in order, one per labelled paragraph) are run-in section headings
    (``ENERGY: We will build ...``) rather than speakers: three or more, none used twice (speakers take turns), none
    a person's title or role (``SENATOR WARREN``, ``THE PRESIDENT``) and none the audience, a host or ``Q``."""
    return (
        len(labels) >= 3
        and len(set(labels)) == len(labels)
        and all(can_lead(label) and label != "Q" and not _PERSON.match(label) for label in labels)
    )


def _titled(line: str) -> tuple[str, str, bool, bool] | None:
    """``(label, rest, time-stamped, written with lower case)`` for a label of any case (``_TITLED_LABEL``)."""
    m = _TITLED_LABEL.match(line)
    if not m or sum(c.isalpha() for c in m.group("label")) < 2:
        return None
    stamped = any(m.group(g) for g in ("before", "after", "alone"))
    return norm_label(m.group("label")), m.group("rest"), stamped, any(c.islower() for c in m.group("label"))


def titled_speakers(lines: list[str], speakers: set[str]) -> set[str]:
    """The labels without a time stamp that count as speakers in this file: none unless ``speakers``'s own label is
    written with lower case at the start of a line; then every such label but discourse words (``First:``)."""
    found = [f for line in lines if (f := _titled(line)) and f[3]]
    if not {f[0] for f in found} & speakers:
        return set()
    return {f[0] for f in found if not f[2]} - _DISCOURSE


def unnamed_speakers(lines: list[str]) -> list[str]:
    """Capitalised ``Name:`` labels without a time stamp that look like speakers taking turns, but count only with
    ``--speaker`` (``titled_speakers``): what to warn about. Two or more labels that each start two or more lines,
    with questions asked on two or more of those lines (run-in headings repeated in a list ask none)."""
    counts: dict[str, int] = {}
    questions = 0
    for line in lines:
        if (found := _titled(line.strip())) and found[3] and not found[2] and found[0] not in _DISCOURSE:
            counts[found[0]] = counts.get(found[0], 0) + 1
            questions += "?" in found[1]
    recurring = [label for label, n in counts.items() if n >= 2]
    return recurring if len(recurring) >= 2 and questions >= 2 else []


def speaker_label(
    line: str, paragraph_start: bool = False, titled: set[str] = frozenset(), after_sentence: bool = True
) -> Label | None:
    """The label a line starts with, if any: press-office labels only when the line starts a paragraph; labels of
    any case when time-stamped or in ``titled`` (``titled_speakers``); a bare ``Q`` only where the line before
    ended a sentence (``after_sentence``: "a room on / Q Street" goes on)."""
    m = _QUESTION.match(line)
    if m and (m.group("mark") or paragraph_start or after_sentence):
        return Label("Q", m.group("rest"), False)
    m = _LABEL.match(line)
    if m and sum(c.isalpha() for c in m.group("label")) >= 2 and norm_label(m.group("label")) not in _DISCOURSE:
        label = norm_label(m.group("label"))
        return Label(label, m.group("rest"), can_lead(label))
    found = _titled(line)
    if found and (found[2] or found[0] in titled):
        return Label(found[0], found[1], can_lead(found[0]))
    m = _PRESS_LABEL.match(line) if paragraph_start else None
    if m and not (m.group("name") and _ADDRESSED.fullmatch(m.group("name"))):
        role = m.group("role")
        label = norm_label(role or f"{m.group('title')} {m.group('name')}")
        return Label(label, m.group("rest") or "", bool(role) and can_lead(label))
    return None


def speech_labels(lines: list[str]) -> set[str]:
    """Upper-case labels of a turn in lower case, or of a turn that starts on the next line."""
    return {
        norm_label(m.group("label"))
        for s in lines
        if (m := _LABEL.match(s)) and (not m.group("rest") or any(c.islower() for c in m.group("rest")))
    }


def is_heading(line: str, labels: set[str]) -> bool:
    """Whether ``line`` is a section heading; not when it starts with one of ``labels`` (``speech_labels``), as
    ``THE PRESIDENT: THANK YOU ALL`` does where ``THE PRESIDENT:`` also labels text in lower case."""
    if not _HEADING.fullmatch(line) or _CLOSED.search(line) or line.startswith(("[", "(")):
        return False  # "[APPLAUSE]" alone on a line is a stage direction inside a sentence, not a heading
    m = _LABEL.match(line)
    return not (m and norm_label(m.group("label")) in labels)


_MINOR_WORDS = frozenset("a an the and but or nor for of on in at to by from with as vs. vs via per into upon".split())


_DATELINE = re.compile(r"(?:The\s+White\s+House|THE\s+WHITE\s+HOUSE),?\s+[A-Z][a-z]+\.?\s+\d{1,2},\s+\d{4}[.,]?")
# an editors' note of a published text ("1At this point the President ...", "1 See 1969 volume, Item 279.", a
# numbered note that cites where a text is printed: "1 The canal report ... (99th Cong., 1st sess.).", "1 Executive
# Order 12 (3 CFR, p. 4.)"), or a table of figures set with dot leaders (two runs or more: one may be an ellipsis)
_EDITORIAL = re.compile(
    r"\d{1,2}(?:[A-Z][a-z]|\s+See\s|\s+[A-Z].*(?:\bCong\.|\bsess\.|\bCFR\b|\bStat\.|\bp\.\s*\d))|(?:.*?\.{5,}){2}"
)


def is_title(paragraph: str) -> bool:
    """Whether a speech paragraph is a title, dateline or heading rather than speech: at most 12 words, no closing
    punctuation, and every word capitalised but articles, conjunctions and short prepositions (``Remarks by the
    Governor on the Budget``, ``March 3, 2024``, ``Des Moines, Iowa``), or with closing punctuation when it has no
    lower-case letter (``POSTAL SAVINGS BANKS.``, ``III.``) or is a dateline (``The White House, January 19,
    1978.``); "When we see" (a sentence broken over two paragraphs) is speech. Editors' notes and tables of figures
    (``_EDITORIAL``) are not speech either."""
    if _DATELINE.fullmatch(paragraph) or _EDITORIAL.match(paragraph):
        return True
    return len(paragraph.split()) <= 12 and (not any(c.islower() for c in paragraph) or _title_case(paragraph))


def _title_case(text: str) -> bool:
    """At most 12 words, every one capitalised but articles, conjunctions and short prepositions, and no closing
    punctuation or dash (``Remarks by the Governor on the Budget``)."""
    words = text.split()
    return (
        len(words) <= 12
        and not _CLOSED.search(text)
        and not text.endswith(("-", "—"))
        and all(w[0].isupper() for w in words if w[0].isalpha() and w.lower() not in _MINOR_WORDS)
    )


def glued_heading(before: str, line: str) -> bool:
    """Whether ``line`` is a heading in title case printed on the line right after a finished sentence (``before``),
    with no blank line between: ``... any longer.`` / ``Older Americans``. It is a paragraph of its own."""
    return bool(_FINISHED.search(before)) and any(c.islower() for c in line) and _title_case(line)
