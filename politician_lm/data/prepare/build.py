"""Records from parsed inputs, cut to the token limits.

Every record has ``kind`` and ``source`` (the file name, or a corpus document's id), plus
``line``/``turn``/``row``/``entry``:

* speeches -> ``style``: ``USER: Continue the speech: <context>`` / ``POLITICIAN: <passage>``. A corpus document is
  a speech like a file; its records also carry the document's ``date`` and ``title``.
* interviews -> ``policy``: ``USER: <the question>`` / ``POLITICIAN: <the politician's turn>``. The question is,
  among the turns since the politician last spoke, the last reporter's (``Q``), else the last that asks something
  (``?``, an audience member's at a town hall too), else the last with text that is not the audience's: in a joint
  press conference the other leader's answer is not the question, and an empty ``[applause]`` turn or a heckle does
  not hide it. A turn never holds another speaker's words: any labelled turn
  ends it. A question longer than ``max_prompt_tokens`` keeps its last whole sentences. Politician turns with no
  question before them (opening remarks, or after an inaudible question) become ``style`` continuations. With
  ``multi_turn``, each answer is also written as ``{"messages": [...]}`` with up to 3 earlier exchanges of the same
  file as context.
* tables -> ``table_kind``: ``table_prompt`` filled from the row (``USER: `` is put in front of a prompt without
  a role label) / ``POLITICIAN: <cleaned text>``.
* identity -> ``identity``: the template's questions and answers filled from the profile; multi-turn entries
  become ``{"messages": [...]}``. An entry that needs a field the profile lacks is skipped.
* ready-made records (``--records``) are kept as they are, with their own ``kind``; ``source`` becomes the file
  name (a ``source`` of their own moves to ``origin``). No length filter applies to them.

Passage (window) rule, for speeches and for answers: the sentences are cut, in order and without overlap,
into passages of whole sentences of at most ``max_completion_tokens`` (the ``POLITICIAN:`` completion, no
special tokens). A passage that spans a paragraph break and has to stop mid-paragraph ends at that break
instead when the part up to the break fills at least half the budget. The context of a continuation is the 2
sentences before the passage (1 if 2 exceed ``max_prompt_tokens``); a speech's first sentence is context only.
An answer's first passage is its Q->A completion; the rest of a long answer becomes continuations.

Records with fewer than ``min_completion_words`` completion words, or a completion/prompt over its token limit,
are dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from politician_lm.artifacts.roles import ANY_LABEL, POLITICIAN_LABEL, USER_LABEL
from politician_lm.artifacts.stances import Stance
from politician_lm.data.prepare.clean import split_sentences
from politician_lm.data.prepare.identity import IdentityEntry
from politician_lm.data.prepare.labels import is_audience
from politician_lm.data.prepare.transcripts import Paragraph, Turn
from politician_lm.errors import UserError

CONTINUE = USER_LABEL + "Continue the speech: "

Sentences = list[tuple[str, int]]  # (sentence, line of its paragraph)


@dataclass
class Candidate:
    """A record that passed the length filters, before deduplication."""

    record: dict[str, Any]
    tokens: int  # prompt + completion tokens, no special tokens
    compared_text: str  # the completion text without its label, compared for duplicates
    extends: int | None = None  # index of the Q->A candidate a multi-turn record extends
    drop_reason: str | None = None


class RecordBuilder:
    """Turns parsed inputs into records, applying the length filters (see the module docstring)."""

    def __init__(self, tokenizer: Any, max_completion_tokens: int, min_completion_words: int, max_prompt_tokens: int):
        self.tokenizer = tokenizer
        self.max_completion_tokens, self.max_prompt_tokens = max_completion_tokens, max_prompt_tokens
        self.min_completion_words = min_completion_words
        self.candidates: list[Candidate] = []
        self.dropped: Counter[str] = Counter()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def add(self, record: dict[str, Any], prompt: str, body: str, extends: int | None = None) -> int | None:
        """Keep ``record`` unless a length filter drops it; the index of the kept candidate."""
        n_prompt, n_completion = self.count_tokens(prompt), self.count_tokens(POLITICIAN_LABEL + body)
        reason = (
            "too_short"
            if len(body.split()) < self.min_completion_words
            else "too_long"
            if n_completion > self.max_completion_tokens
            else "prompt_too_long"
            if n_prompt > self.max_prompt_tokens
            else None
        )
        if reason:
            self.dropped[reason] += 1
            return None
        self.candidates.append(Candidate(record, n_prompt + n_completion, body, extends))
        return len(self.candidates) - 1

    def add_pair(self, prompt: str, body: str, kind: str, meta: dict[str, Any]) -> int | None:
        return self.add({"prompt": prompt, "completion": POLITICIAN_LABEL + body, "kind": kind, **meta}, prompt, body)

    def add_chat(
        self, turns: list[tuple[str, str]], kind: str, meta: dict[str, Any], extends: int | None = None
    ) -> int | None:
        messages = [
            m
            for q, a in turns
            for m in (
                {"role": "user", "content": USER_LABEL + q},
                {"role": "assistant", "content": POLITICIAN_LABEL + a},
            )
        ]
        prompt = "\n".join(m["content"] for m in messages[:-1])
        return self.add({"messages": messages, "kind": kind, **meta}, prompt, turns[-1][1], extends)

    # -- passages --------------------------------------------------------------------------------------------
    def passages(self, sentences: Sentences, start: int) -> list[tuple[int, int]]:
        """Cut ``sentences[start:]`` into ``(i, j)`` windows of whole sentences."""
        limit = self.max_completion_tokens
        ids = (
            self.tokenizer([" " + s for s, _ in sentences], add_special_tokens=False, verbose=False)["input_ids"]
            if sentences
            else []
        )
        counts = [len(x) for x in ids]  # per sentence; the exact count of each passage is checked below
        out, i, n, label_tokens = [], start, len(sentences), self.count_tokens(POLITICIAN_LABEL)
        while i < n:
            j, used, paragraph_break = i, label_tokens, None
            while j < n and (j == i or used + counts[j] <= limit):
                used, j = used + counts[j], j + 1
                if j < n and sentences[j][1] != sentences[j - 1][1]:
                    paragraph_break = (j, used)
            if j < n and paragraph_break and paragraph_break[0] < j and 2 * paragraph_break[1] >= limit:
                j = paragraph_break[0]
            while j - i > 1 and self.count_tokens(POLITICIAN_LABEL + " ".join(s for s, _ in sentences[i:j])) > limit:
                j -= 1
            out.append((i, j))
            i = j
        return out

    def add_continuations(self, sentences: Sentences, windows: list[tuple[int, int]], meta: dict[str, Any]) -> None:
        for i, j in windows:
            context = " ".join(s for s, _ in sentences[max(0, i - 2) : i])
            if i >= 2 and self.count_tokens(CONTINUE + context) > self.max_prompt_tokens:
                context = sentences[i - 1][0]
            self.add_pair(
                CONTINUE + context, " ".join(s for s, _ in sentences[i:j]), "style", {**meta, "line": sentences[i][1]}
            )

    def fit_question(self, text: str) -> str | None:
        """The question, cut to its last whole sentences within ``max_prompt_tokens``; None if none fit."""
        sentences = split_sentences(text)
        for k in range(len(sentences)):
            question = " ".join(sentences[k:])
            if self.count_tokens(USER_LABEL + question) <= self.max_prompt_tokens:
                return question
        return None

    # -- sources ---------------------------------------------------------------------------------------------
    def add_speech(self, source: Path | str, paragraphs: list[Paragraph], meta: dict[str, Any] | None = None) -> None:
        """A speech file (its name is the ``source``) or a corpus document (its id, with ``meta``)."""
        sentences = [(s, p.line) for p in paragraphs for s in split_sentences(p.text)]
        name = source.name if isinstance(source, Path) else source
        if len(sentences) < 2:  # the first sentence is only a prompt: one sentence makes no continuation
            self.dropped["too_short"] += 1
        self.add_continuations(sentences, self.passages(sentences, 1), {"source": name, **(meta or {})})

    def add_records(self, path: Path, rows: list[dict[str, Any]]) -> None:
        """Validated prompt/completion or chat records, kept as they are (``source``: the file name)."""
        for row in rows:
            record = dict(row)
            if record.get("source") not in (None, path.name):
                record["origin"] = record["source"]
            record["source"] = path.name
            if "messages" in record:
                prompt = "\n".join(m["content"] for m in record["messages"][:-1])
                answer = record["messages"][-1]["content"]
            else:
                prompt, answer = record["prompt"], record["completion"]
            tokens = self.count_tokens(prompt) + self.count_tokens(answer)
            self.candidates.append(Candidate(record, tokens, ANY_LABEL.sub("", answer, count=1)))

    def add_interview(self, path: Path, turns: list[Turn], speakers: set[str], multi_turn: bool) -> None:
        history: list[tuple[str, str]] = []
        since: list[Turn] = []  # the other speakers' turns since the politician last spoke
        for turn in turns:
            if turn.label not in speakers:
                since.append(turn)
                continue
            sentences = [(s, p.line) for p in turn.paragraphs for s in split_sentences(p.text)]
            meta = {"source": path.name, "turn": turn.number}
            asked, since = _question(since), []
            if not asked:
                self.add_continuations(sentences, self.passages(sentences, 1), meta)
            elif sentences:
                (i, j), *rest = self.passages(sentences, 0)
                answer, question = " ".join(s for s, _ in sentences[i:j]), self.fit_question(asked)
                if question is None:
                    self.dropped["prompt_too_long"] += 1
                else:
                    single = self.add_pair(USER_LABEL + question, answer, "policy", {**meta, "line": turn.line})
                    if single is not None and multi_turn and history:
                        self._add_multi_turn(history[-3:], (question, answer), {**meta, "line": turn.line}, single)
                    history.append((question, answer))
                self.add_continuations(sentences, rest, meta)

    def _add_multi_turn(
        self, history: list[tuple[str, str]], current: tuple[str, str], meta: dict[str, Any], extends: int
    ) -> None:
        for k in range(len(history), 0, -1):  # drop the oldest exchanges until the context fits
            context = (
                "\n".join(f"{USER_LABEL}{q}\n{POLITICIAN_LABEL}{a}" for q, a in history[-k:])
                + f"\n{USER_LABEL}{current[0]}"
            )
            if self.count_tokens(context) <= self.max_prompt_tokens:
                self.add_chat([*history[-k:], current], "policy", {**meta, "context_exchanges": k}, extends)
                return

    def add_identity(self, template: Path, entries: list[IdentityEntry], values: dict[str, str]) -> None:
        for e in entries:
            if e.fields - values.keys():
                self.dropped["missing_profile_field"] += 1
                continue
            turns = [(q.format_map(values), a.format_map(values)) for q, a in e.turns]
            meta = {"topic": e.topic, "source": template.name, "entry": e.number}
            if len(turns) == 1:
                self.add_pair(USER_LABEL + turns[0][0], turns[0][1], "identity", meta)
            else:
                self.add_chat(turns, "identity", meta)

    def add_stances(self, source: str, stances: list[Stance]) -> None:
        """One ``stance`` record per training statement: asked "Do you support ...?", the politician's side and
        argument as the answer; ``opposite`` holds the answer from the other side (``pairs --rejected opposite``)."""
        for st in stances:
            meta = {"topic": st.topic, "source": source, "stance": st.id, "position": st.position}
            meta["opposite"] = st.answers(st.opposite)[0]
            if self.add_chat([(st.question, st.answer)], "stance", meta) is None:  # hand-written: never dropped quietly
                raise UserError(
                    f"{source.removeprefix('stances:')}: stance {st.id!r} makes a record over the length limits "
                    f"(--max_completion_tokens {self.max_completion_tokens}, --max_prompt_tokens "
                    f"{self.max_prompt_tokens}, --min_completion_words {self.min_completion_words}); shorten its "
                    "argument or change the limit"
                )


def _question(turns: list[Turn]) -> str:
    """The question among the other speakers' ``turns`` since the politician last spoke (see the module's notes)."""
    said = [t for t in turns if t.text.strip()]
    asked = (
        [t for t in said if t.label == "Q"]
        or [t for t in said if "?" in t.text]
        or [t for t in said if not is_audience(t.label)]
    )
    return asked[-1].text if asked else ""
