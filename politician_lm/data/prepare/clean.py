"""Text cleaning for ``prepare``: stage directions, Markdown, posts, and splitting text into sentences.

* Stage directions: any ``[...]`` (``[Laughter]``, ``[At this point, ...]``, and editorial corrections such as
  ``[majority; White House correction]``: the words as spoken stay); any ``(...)`` that starts with a stage word
  (applause, laughter, cheers, inaudible, crosstalk, audience, music, ...) or, press-office style, is a capitalised
  sentence ending in a period, e.g. ``(The President exits.)``, or is a time stamp (``(00:12)``). A speaker cut
  off by one keeps the dash and goes on: ``Ukraine—[applause]. Ukraine can`` and ``Now—[applause]—thank you``
  become ``Ukraine— Ukraine can`` and ``Now— thank you``.
  No double spaces and no space before punctuation are left behind.
* Speeches (``speech_text``): a salutation run-up (``Madam Speaker, Mr. President, distinguished guests,
  fellow citizens:``) is removed from the start of a paragraph or sentence; see ``strip_salutation``. A paragraph
  that ends cut off (``And the—``) loses that unfinished fragment, so a record never ends mid-sentence.
* Markdown (``.md`` files): heading lines, rules, HTML comments and tags are dropped; links keep their text;
  emphasis, quote and list markers are removed.
* Posts (``clean_post``): HTML markup and links removed (shorteners too), the handles a reply starts with, thread
  counters and hashtags after the last sentence dropped, other ``@handle`` becomes ``@user``, ``#HashTag`` becomes
  ``Hash Tag`` (``#MAGA`` stays ``MAGA``, ``#1`` stays), HTML entities decoded, whitespace collapsed.
* Sentences (``split_sentences``): titles (``Mr.``, ``Dr.``, ``St.``, ...), initials and ``U.S.`` never end one;
  ``No.`` does only when no number follows.
"""

from __future__ import annotations

import html
import re

import ftfy

_STAGE_WORD = re.compile(
    r"(?:applause|laughter|laughs|laughing|cheers|cheering|boos|booing|inaudible|indiscernible|unintelligible|"
    r"cross-?talk|audience|crowd|music|video|pause|silence|technical|off[- ]mic|chant\w*|cough\w*|sic)\b",
    re.I,
)
_PAREN = re.compile(r"\(([^()]*)\)")
_BRACKET = re.compile(r"\[[^\[\]]*\]\*?")  # an editor's correction ends in its asterisk: "the canal [channel]* opened"
_MD_DROP = re.compile(r"^\s{0,3}(?:#{1,6}(?:\s.*)?|[-=*_]{3,}\s*)$")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPH = re.compile(r"(?<!\w)(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_MD_PREFIX = re.compile(r"^\s{0,3}(?:>\s?|[-*+]\s+|\d+[.)]\s+)+")
_HTML = re.compile(r"<!--.*?-->|</?[a-zA-Z][^>]*>", re.S)


_TIME_STAMP = re.compile(r"\d{1,2}(?::\d{2}){1,2}")  # (00:12), (1:02:03): a transcription service's time stamp


def _is_stage_direction(inner: str) -> bool:
    s = inner.strip()
    return not s or bool(_STAGE_WORD.match(s)) or (s[0].isupper() and s.endswith(".")) or bool(_TIME_STAMP.fullmatch(s))


_GAP = "\x00"  # where a stage direction was
# a dash, then stage directions, then the punctuation or dash the transcriber put after them: the speaker was cut off
_CUT_OFF = re.compile(r"(—|--)\s*(?:\x00\s*)+(?:—|--|[.,;:](?!\w))?")


# ftfy's repairs without straightening curly quotes or decoding markup (clean_post and strip_markdown do that)
_FTFY = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, explain=False)
_INVISIBLE = re.compile("[\u200b-\u200d\u2060\ufeff\u00ad]")  # zero-width spaces and joiners, soft hyphens


def fix_text(text: str) -> str:
    """Text as it was meant to be read: mojibake (``cafÃ©`` for ``café``: UTF-8 read as Latin-1, as Facebook's data
    export writes it), control characters, zero-width characters and soft hyphens repaired or removed (ftfy)."""
    return _INVISIBLE.sub("", ftfy.fix_text(text, _FTFY))


def tidy_spacing(text: str) -> str:
    """Single spaces, none at either end or before ``, . ; : ! ?``."""
    return re.sub(r" +([,.;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip()


def strip_stage_directions(text: str) -> str:
    text = _BRACKET.sub(_GAP, text)
    text = _PAREN.sub(lambda m: _GAP if _is_stage_direction(m.group(1)) else m.group(0), text)
    text = _CUT_OFF.sub(r"\1 ", text)
    return tidy_spacing(text.replace(_GAP, " "))


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
_SHORTENERS = r"(?:bit\.ly|t\.co|tinyurl\.com|ow\.ly|buff\.ly|goo\.gl|youtu\.be|fb\.me|trib\.al|dlvr\.it|lnkd\.in)"
_URL = re.compile(rf"\b(?:https?://|www\.|{_SHORTENERS}/)[^\s<>\"“”’)\]]+|\bpic\.twitter\.com/[^\s<>\"“”’)\]]+", re.I)
_EMPTY_MARKS = re.compile(r"\(\s*\)|\[\s*\]|“\s*”|\"\s*\"")  # what a link inside brackets or quotes leaves
_HANDLE = re.compile(r"(?<![\w@])@\w{1,30}")
_REPLY_TO = re.compile(r"^(?:@\w{1,30}[\s,]+)+")  # "@a @b Thank you both": whom the reply went to
_HASHTAG = re.compile(r"(?<![\w#])#([A-Za-z]\w*)")  # "#1" is no hashtag
_TRAILING_TAGS = re.compile(r"(?:\s+#\w+)+\s*$")
_SENTENCE_DONE = re.compile(r"[.!?…][\"”’')]*[^\w#]*$")  # then perhaps emoji
_THREAD = re.compile(r"^\(?\d{1,2}/\d{1,2}\)?\s+|\s+\(?\d{1,2}/\d{1,2}\)?\s*$|🧵")
_HTML_BREAK = re.compile(r"<br\s*/?>|</p>|</div>", re.I)
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


# a name's particle or a brand's prefix glued to the next capital: "#StopMcConnell" -> "Stop McConnell", "#iPhone"
_GLUED = frozenset({"Mc", "Mac", "De", "Di", "Da", "Du", "La", "Le", "Van", "Von", "Fitz", "i", "e"})


def _unwrap_hashtag(m: re.Match) -> str:
    tag = m.group(1)
    if not any(c.islower() for c in tag):
        return tag
    words = [""]
    for part in re.split(r"(?<=[a-z])(?=[A-Z])", tag):
        words[-1:] = [words[-1] + part] if words[-1] in _GLUED else [w for w in (words[-1], part) if w]
    return " ".join(words)


def clean_post(text: str) -> str:
    """A post as the politician's words: HTML markup (Mastodon and Truth Social export it), links (shorteners too),
    the handles a reply starts with, thread counters (``1/3``, ``(2/3)``, 🧵) and hashtags after the last sentence
    go; other handles become ``@user`` and other hashtags their words (``#BuildBackBetter`` -> ``Build Back
    Better``); character references are decoded, mojibake and control characters repaired (``fix_text``)."""
    text = _HTML_TAG.sub("", _HTML_BREAK.sub(" ", fix_text(text)))
    text = html.unescape(text)
    text = _EMPTY_MARKS.sub(" ", _URL.sub(" ", text))
    text = _THREAD.sub(" ", _REPLY_TO.sub("", text.strip()).strip())
    text = re.sub(r"^\.(?=@)", "", text.strip())  # ".@CNN is ...": the dot only kept it from reading as a reply
    tags = _TRAILING_TAGS.search(text)
    if tags and _SENTENCE_DONE.search(text[: tags.start()]):
        text = text[: tags.start()]
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
    "inc",
    "corp",
    "ltd",
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
    """Split at ``. ! ?`` followed by a capital, digit or opening quote; titles (inside a quote too: ``"Mr.``),
    initials and ``U.S.`` don't split, nor does ``No.`` before a number (``No. 1``) or a list's number (``2. We``)."""
    out, start = [], 0
    for m in _SENT_END.finditer(text):
        nxt = text[m.end() : m.end() + 1]
        if not (nxt.isupper() or nxt.isdigit() or nxt in "\"“‘'("):
            continue
        if m.group().startswith("."):
            words = text[start : m.start()].split()
            last = words[-1].lower() if words else ""
            title = last.lstrip("\"“‘'([")  # '"Mr.' is a title inside a quote
            if (title in _ABBREV and (title != "no" or nxt.isdigit())) or re.fullmatch(r"(?:[a-z]\.)*[a-z]", last):
                continue
            if len(words) == 1 and re.fullmatch(r"\d{1,2}", last):  # a list's "2." stays with its item
                continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    return out + [tail] if tail else out


# -- speeches -------------------------------------------------------------------------------------------------
_NAME = r"(?:\s+(?:[A-Z]\.|[A-Z][\w'’-]+)){1,3}"  # "Biden", "Marco A. Rubio"
_TITLED = (
    r"(?:Mr\.|Mrs\.|Ms\.|Madam|Madame|Mister)\s+(?:Vice\s+)?(?:Speaker|President|Chairman|Chairwoman|Chair|"
    r"Secretary|Leader|Chief\s+Justice|Prime\s+Minister|Mayor|Governor|Ambassador)"
)
_ADDRESS_FORM = (
    r"(?:(?:my|our|the|all|dear)\s+)?(?:" + _TITLED + r"|(?:Vice\s+)?President(?:" + _NAME + r")?"
    r"|Speaker(?:" + _NAME + r")?"
    r"|(?:Majority|Minority|Democratic|Republican)\s+Leader(?:" + _NAME + r")?"
    r"|(?:(?:Chief|Associate|retired)\s+)?Justices?(?:\s+of\s+the\s+Supreme\s+Court)?"
    r"|(?:distinguished\s+)?Members\s+of\s+(?:the\s+)?(?:\d+\w*\s+)?(?:Congress|Cabinet|Senate|House|[A-Z]\w+)"
    r"|(?:[Tt]o\s+)?(?:the\s+)?(?:(?:Fellow[- ][Cc]itizens|Gentlemen)\s+of\s+the\s+)?Senate\s+and\s+(?:of\s+the\s+)?"
    r"House(?:\s+of\s+Representatives(?:\s+of\s+the\s+United\s+States)?)?"  # written messages: "To the Senate and ..."
    r"|Gentlemen\s+of\s+the\s+(?:Senate|House\s+of\s+Representatives|Congress)|[Tt]o\s+the\s+Congress(?:\s+of\s+the\s+"
    r"United\s+States)?"
    r"|(?:fellow|distinguished|honou?red|esteemed)(?:\s+\w+)?\s+(?:Americans|citizens|guests|colleagues|friends)"
    r"|[Ll]adies\s+and\s+gentlemen"
    r"|(?:First|Second)\s+(?:Lady|Gentleman)(?:\s+of\s+the\s+United\s+States)?"
    r"|leaders\s+of\s+(?:our|the)\s+\w+"
    r"|Congress|Cabinet|Senators|Representatives|Governors|Mayors|Delegates|(?:Your\s+)?Excellenc(?:y|ies)"
    r")"
)
# one item of a run: an address form, or several joined by "and" ("our First Lady and Second Gentleman"),
# possibly "and"/"to you" in front
_ADDRESS_ITEM = re.compile(
    rf"(?:[Aa]nd\s+)?(?:to\s+you|(?:to\s+)?{_ADDRESS_FORM}(?:\s+and\s+{_ADDRESS_FORM})*)",
)
_ITEM_END = re.compile(r"\s*([,;:]|\.$|$)\s*")
_LAST_ITEM = re.compile(rf",\s*{_ADDRESS_ITEM.pattern}\s*:$")  # "..., ladies and gentlemen:" ends a salutation


def strip_salutation(sentence: str, alone: bool = False) -> str:
    """``sentence`` without the salutation run it starts with.

    A run is one or more address forms (``Mr. Speaker``, ``Madam Vice President``, ``Vice President Biden``,
    ``distinguished guests``, ``Members of Congress``, ``my fellow Americans``, ``ladies and gentlemen``, ``the First
    Lady of the United States``, ...) separated by commas or semicolons. It goes when it ends with ``:``
    (the rest of the sentence stays), when it is the whole sentence and has two or more forms (or ``alone``: the
    sentence is a paragraph of its own), or when three or more forms end with ``,`` (the rest stays, capitalised).
    A paragraph of its own that starts with a form and ends with one and ``:`` is a salutation whatever comes
    between (``Mr. President, my old friend and new Speaker, ..., ladies and gentlemen:``).
    ``My fellow Americans, we ...`` keeps its address: the run is a single form that ends with a comma.
    """
    pos, items, sep = 0, 0, ""
    while True:
        m = _ADDRESS_ITEM.match(sentence, pos)
        end = _ITEM_END.match(sentence, m.end()) if m else None
        if not end:
            if items >= 3 and sep == ",":
                return sentence[pos : pos + 1].upper() + sentence[pos + 1 :]
            return "" if alone and items and sentence.endswith(":") and _LAST_ITEM.search(sentence) else sentence
        items += 1
        sep = end.group(1)
        if sep == ":":
            return sentence[end.end() :]
        if sep in (".", ""):
            return "" if items >= 2 or alone else sentence
        pos = end.end()


def _is_finished(sentence: str) -> bool:
    return bool(re.search(r"[.!?…][\"”’')\]]*$", sentence))


# a published text's footnote marker: a number right after a word's closing punctuation ("at Guam.1 Neither"), or
# an asterisk after any ("built in 1902.* It", "the dams [docks].*" once the correction is gone)
_FOOTNOTE_MARK = re.compile(r"(?<=[a-z]{2}[.,;:])\d{1,2}(?=\s|$)|(?<=\w[.,;:!?])\*(?=\s|$)")


def speech_text(paragraph: str) -> str:
    """A speech paragraph without salutation run-ups (at any sentence start), footnote markers or a cut-off last
    fragment."""
    sentences = split_sentences(_FOOTNOTE_MARK.sub("", re.sub(r"(—|--){2,}", r"\1", paragraph)))
    kept = [s for s in (strip_salutation(s, alone=len(sentences) == 1) for s in sentences) if s]
    if kept and not _is_finished(kept[-1]) and re.search(r"(—|--)$", kept[-1]):
        kept.pop()
    return tidy_spacing(" ".join(kept))


MIN_SENTENCES_PER_100_WORDS = 1  # below this a text is not punctuated (auto captions, speech-to-text output)
SENTENCE_END = re.compile(r"[.!?…][\"”’')\]]*$")  # a sentence ended here (also the captions' pause rule)


def unpunctuated(text: str) -> bool:
    """Whether ``text`` has too few sentence ends to be cut into whole sentences (under one per 100 words)."""
    ended = sum(bool(SENTENCE_END.search(x)) for x in split_sentences(text))  # "Mr." ends none
    return ended * 100 < MIN_SENTENCES_PER_100_WORDS * len(text.split())
