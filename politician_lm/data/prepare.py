"""``politician-lm prepare``: speech and interview transcripts, tables of posts and a profile in, JSONL out.

The output folder holds ``train.jsonl``, ``val.jsonl`` (the records ``PoliticianDataModule`` reads) and
``stats.json``; it is written to a temporary folder and renamed into place. Every input is read and checked
before the tokenizer loads (see ``prepare_sources`` for the cleaning rules).

Records (every one has ``kind`` and ``source``, the file name, plus ``line``/``turn``/``row``/``entry``):

* speeches -> ``style``: ``USER: Continue the speech: <context>`` / ``POLITICIAN: <passage>``.
* interviews -> ``policy``: ``USER: <the turn before the politician's>`` / ``POLITICIAN: <the politician's turn>``.
  A turn never holds another speaker's words: any labelled turn ends it. A question longer than
  ``max_prompt_tokens`` keeps its last whole sentences. Politician turns with no question before them
  (opening remarks, or after an inaudible question) become ``style`` continuations. With ``multi_turn``, each
  answer is also written as ``{"messages": [...]}`` with up to 3 earlier exchanges of the same file as context.
* tables -> ``table_kind``: ``table_prompt`` filled from the row (``USER: `` is put in front of a prompt without
  a role label) / ``POLITICIAN: <cleaned text>``.
* identity -> ``identity``: the template's questions and answers filled from the profile; multi-turn entries
  become ``{"messages": [...]}``. An entry that needs a field the profile lacks is skipped.

Passage (window) rule, for speeches and for answers: the sentences are cut, in order and without overlap,
into passages of whole sentences of at most ``max_completion_tokens`` (the ``POLITICIAN:`` completion, no
special tokens). A passage that spans a paragraph break and has to stop mid-paragraph ends at that break
instead when the part up to the break fills at least half the budget. The context of a continuation is the 2
sentences before the passage (1 if 2 exceed ``max_prompt_tokens``); a speech's first sentence is context only.
An answer's first passage is its Q->A completion; the rest of a long answer becomes continuations.

Hygiene, in input order (transcripts, interviews, tables, identity): records with fewer than
``min_completion_words`` completion words, or a completion/prompt over its token limit, are dropped. Texts
are compared on the completion (the last assistant turn) after lower-casing, removing punctuation and the
role label, and collapsing whitespace. Exact duplicate: the same normalised text as an earlier kept record.
Near duplicate: word 3-gram Jaccard similarity >= ``near_dup_threshold`` with an earlier kept record (exact,
through an inverted index of 3-grams; a text under 3 words is one gram). Kept records whose similarity is
>= ``cluster_threshold`` join one cluster, and a multi-turn record joins the cluster of the answer it extends.

Split rule: a cluster goes to val when ``records.split_bucket`` of its first record (as the DataModule sees it)
is below ``val_fraction``, so the split is the DataModule's own rule, and a cluster never straddles the split.

``stats.json``: ``records`` (train/val/total), ``kinds`` and ``sources`` (written records), ``clusters``,
``tokens`` (nearest-rank p50/p90/p99 and max of prompt + completion tokens with ``tokenizer``, no special
tokens; a chat record's prompt is its earlier turns joined by newlines), ``dropped`` (count per reason in
``REASONS``) and ``settings`` (the arguments).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from politician_lm.data import prepare_sources as src
from politician_lm.data.records import split_bucket, to_conversation
from politician_lm.errors import UserError
from politician_lm.artifacts.atomic import atomic_dir, check_output

USER, POLITICIAN, CONTINUE = "USER: ", "POLITICIAN: ", "USER: Continue the speech: "
REASONS = ("bad_file", "bad_line", "retweet", "missing_profile_field", "too_short", "too_long", "prompt_too_long",
           "exact_duplicate", "near_duplicate")
_ROLE = re.compile(r"^\s*(?:USER|POLITICIAN)\s*:\s*", re.I)


def _bar(items: list, desc: str, unit: str, large: int) -> Any:
    return tqdm(items, desc=desc, unit=unit, leave=False, disable=True if len(items) < large else None)


@dataclass
class _Item:
    record: dict[str, Any]
    tokens: int  # prompt + completion tokens, no special tokens
    target: str  # the completion text, compared for duplicates
    twin: int | None = None  # index of the Q->A item a multi-turn record extends
    dropped: str | None = None


class _Builder:
    """Turns parsed inputs into records, applying the length filters (see the module docstring)."""

    def __init__(self, tokenizer: Any, max_completion_tokens: int, min_completion_words: int, max_prompt_tokens: int):
        self.tok, self.max_c, self.max_p = tokenizer, max_completion_tokens, max_prompt_tokens
        self.min_w = min_completion_words
        self.items: list[_Item] = []
        self.dropped: Counter[str] = Counter()

    def ntok(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    def add(self, record: dict[str, Any], prompt: str, body: str, twin: int | None = None) -> int | None:
        n_prompt, n_completion = self.ntok(prompt), self.ntok(POLITICIAN + body)
        reason = ("too_short" if len(body.split()) < self.min_w else "too_long" if n_completion > self.max_c
                  else "prompt_too_long" if n_prompt > self.max_p else None)
        if reason:
            self.dropped[reason] += 1
            return None
        self.items.append(_Item(record, n_prompt + n_completion, body, twin))
        return len(self.items) - 1

    def pair(self, prompt: str, body: str, kind: str, meta: dict[str, Any]) -> int | None:
        return self.add({"prompt": prompt, "completion": POLITICIAN + body, "kind": kind, **meta}, prompt, body)

    def chat(self, turns: list[tuple[str, str]], kind: str, meta: dict[str, Any], twin: int | None = None) -> int | None:
        messages = [m for q, a in turns for m in ({"role": "user", "content": USER + q},
                                                  {"role": "assistant", "content": POLITICIAN + a})]
        prompt = "\n".join(m["content"] for m in messages[:-1])
        return self.add({"messages": messages, "kind": kind, **meta}, prompt, turns[-1][1], twin)

    # -- passages --------------------------------------------------------------------------------------------
    def passages(self, sents: list[tuple[str, int]], start: int) -> list[tuple[int, int]]:
        """Cut ``sents[start:]`` ((sentence, paragraph line) pairs) into ``(i, j)`` windows of whole sentences."""
        ids = self.tok([" " + s for s, _ in sents], add_special_tokens=False, verbose=False)["input_ids"] if sents else []
        counts = [len(x) for x in ids]  # per sentence; the exact count of each passage is checked below
        out, i, n, label = [], start, len(sents), self.ntok(POLITICIAN)
        while i < n:
            j, used, brk = i, label, None
            while j < n and (j == i or used + counts[j] <= self.max_c):
                used, j = used + counts[j], j + 1
                if j < n and sents[j][1] != sents[j - 1][1]:
                    brk = (j, used)
            if j < n and brk and brk[0] < j and 2 * brk[1] >= self.max_c:
                j = brk[0]
            while j - i > 1 and self.ntok(POLITICIAN + " ".join(s for s, _ in sents[i:j])) > self.max_c:
                j -= 1
            out.append((i, j))
            i = j
        return out

    def continuations(self, sents: list[tuple[str, int]], windows: list[tuple[int, int]], meta: dict[str, Any]) -> None:
        for i, j in windows:
            context = " ".join(s for s, _ in sents[max(0, i - 2):i])
            if i >= 2 and self.ntok(CONTINUE + context) > self.max_p:
                context = sents[i - 1][0]
            self.pair(CONTINUE + context, " ".join(s for s, _ in sents[i:j]), "style", {**meta, "line": sents[i][1]})

    def question(self, text: str) -> str | None:
        """The question, cut to its last whole sentences within ``max_prompt_tokens``; None if none fit."""
        sents = src.split_sentences(text)
        for k in range(len(sents)):
            q = " ".join(sents[k:])
            if self.ntok(USER + q) <= self.max_p:
                return q
        return None

    # -- sources ---------------------------------------------------------------------------------------------
    def speech(self, path: Path, paragraphs: list[src.Paragraph]) -> None:
        sents = [(s, p.line) for p in paragraphs for s in src.split_sentences(p.text)]
        self.continuations(sents, self.passages(sents, 1), {"source": path.name})

    def interview(self, path: Path, turns: list[src.Turn], speakers: set[str], multi_turn: bool) -> None:
        history: list[tuple[str, str]] = []
        prev: src.Turn | None = None
        for turn in turns:
            if turn.label in speakers:
                sents = [(s, p.line) for p in turn.paragraphs for s in src.split_sentences(p.text)]
                meta = {"source": path.name, "turn": turn.number}
                asked = prev.text if prev is not None and prev.label not in speakers else ""
                if not asked:
                    self.continuations(sents, self.passages(sents, 1), meta)
                elif sents:
                    (i, j), *rest = self.passages(sents, 0)
                    answer, q = " ".join(s for s, _ in sents[i:j]), self.question(asked)
                    if q is None:
                        self.dropped["prompt_too_long"] += 1
                    else:
                        twin = self.pair(USER + q, answer, "policy", {**meta, "line": turn.line})
                        if twin is not None and multi_turn and history:
                            self._multi(history[-3:], (q, answer), {**meta, "line": turn.line}, twin)
                        history.append((q, answer))
                    self.continuations(sents, rest, meta)
            prev = turn

    def _multi(self, history: list[tuple[str, str]], current: tuple[str, str], meta: dict[str, Any], twin: int) -> None:
        for k in range(len(history), 0, -1):  # drop the oldest exchanges until the context fits
            context = "\n".join(f"{USER}{q}\n{POLITICIAN}{a}" for q, a in history[-k:]) + f"\n{USER}{current[0]}"
            if self.ntok(context) <= self.max_p:
                self.chat([*history[-k:], current], "policy", {**meta, "context_exchanges": k}, twin)
                return

    def identity(self, template: Path, entries: list[src.IdentityEntry], values: dict[str, str]) -> None:
        for e in entries:
            if e.fields - values.keys():
                self.dropped["missing_profile_field"] += 1
                continue
            turns = [(q.format_map(values), a.format_map(values)) for q, a in e.turns]
            meta = {"topic": e.topic, "source": template.name, "entry": e.number}
            if len(turns) == 1:
                self.pair(USER + turns[0][0], turns[0][1], "identity", meta)
            else:
                self.chat(turns, "identity", meta)


def _table_rows(path: Path, text_column: str, template: str, fields: list[str], skip_bad: bool,
                dropped: Counter) -> list[tuple[str, str, dict[str, Any]]]:
    """(prompt, cleaned text, metadata) per usable row of a table file."""
    rows, columns, bad = src.read_table(path, skip_bad)
    dropped["bad_line"] += bad
    if text_column not in columns:
        raise UserError(f"{path}: no column {text_column!r} (columns: {', '.join(sorted(columns)) or 'none'}); "
                        "set --text_column")
    unknown = [f for f in fields if f != "topic" and f not in columns]
    if unknown:
        raise UserError(f"{path}: --table_prompt uses {{{unknown[0]}}}, which is not a column here "
                        f"(columns: {', '.join(sorted(columns))}; {{topic}} defaults to 'anything')")
    out = []
    for row in rows:
        text = row.values.get(text_column)
        missing = [f for f in fields if f != "topic" and f not in row.values]
        problem = (f"{row.loc}: {text_column!r} must be a string, got {type(text).__name__}" if not isinstance(text, str)
                   else f"{row.loc}: no value for {{{missing[0]}}} used by --table_prompt" if missing else None)
        if problem:
            if not skip_bad:
                raise src.BadLine(problem)
            dropped["bad_line"] += 1
            continue
        if text.lstrip().startswith("RT @"):
            dropped["retweet"] += 1
            continue
        values = {k: "" if v is None else str(v) for k, v in row.values.items()}
        topic = values.get("topic", "").strip()
        prompt = template.format_map({**values, "topic": topic or "anything"})
        prompt = prompt if _ROLE.match(prompt) else USER + prompt
        meta = {**({"topic": topic} if topic else {}), "source": path.name, **row.meta}
        out.append((prompt, src.clean_post(text), meta))
    return out


# -- hygiene and split ----------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", re.sub(r"['’]", "", _ROLE.sub("", text).lower())).split()


def _grams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)} or {tuple(words)}


def _dedupe(items: list[_Item], near: float, cluster: float) -> dict[int, int]:
    """Mark duplicates ``dropped``; return the cluster root (the index of its first item) of every kept item."""
    exact: set[str] = set()
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    sizes: dict[int, int] = {}
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for n, item in enumerate(_bar(items, "Deduplicating", "record", 2000)):
        if item.twin is not None:
            item.dropped = items[item.twin].dropped
            if item.dropped is None:
                parent[n] = root(item.twin)
            continue
        words = _words(item.target)
        if " ".join(words) in exact:
            item.dropped = "exact_duplicate"
            continue
        grams = _grams(words)
        shared = Counter(k for g in grams for k in index.get(g, ()))
        sims = {k: c / (len(grams) + sizes[k] - c) for k, c in shared.items()}
        if any(s >= near for s in sims.values()):
            item.dropped = "near_duplicate"
            continue
        exact.add(" ".join(words))
        sizes[n], parent[n] = len(grams), n
        for g in grams:
            index[g].append(n)
        for k in (k for k, s in sims.items() if s >= cluster):
            a, b = sorted((root(k), root(n)))
            parent[b] = a
    return {n: root(n) for n in parent}


def _percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles."""
    v = sorted(values)
    return {f"p{p}": v[max(0, math.ceil(p / 100 * len(v)) - 1)] for p in (50, 90, 99)} | {"max": v[-1]}


def _stats(train: list[_Item], val: list[_Item], clusters: int, dropped: Counter, settings: dict[str, Any]) -> dict:
    every = train + val
    return {
        "records": {"train": len(train), "val": len(val), "total": len(every)},
        "kinds": dict(sorted(Counter(i.record["kind"] for i in every).items())),
        "sources": dict(sorted(Counter(i.record["source"] for i in every).items())),
        "clusters": clusters,
        "tokens": _percentiles([i.tokens for i in every]),
        "dropped": {r: dropped[r] for r in REASONS},
        "settings": settings,
    }


def _summary(out: Path, stats: dict[str, Any]) -> str:
    def fmt(d: dict, most: int = 8) -> str:
        top = Counter({k: v for k, v in d.items() if v}).most_common()
        more = f", and {len(top) - most} more" if len(top) > most else ""
        return ", ".join(f"{k} {v}" for k, v in top[:most]) + more or "none"

    r, t = stats["records"], stats["tokens"]
    return "\n".join([
        f"prepared {r['total']} records ({r['train']} train / {r['val']} val) in {out}",
        f"  kinds:   {fmt(stats['kinds'])}",
        f"  sources: {fmt(stats['sources'])}",
        f"  tokens (prompt+completion): p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}",
        f"  dropped: {fmt(stats['dropped'])}",
    ])


def _as_list(value: list[str] | str | None) -> list[str] | None:
    """``a,b`` (or a single path) from the command line, or a list."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def prepare(
    output_dir: str,
    transcripts: list[str] | str | None = None,
    interviews: list[str] | str | None = None,
    speaker: str | None = None,
    table: list[str] | str | None = None,
    text_column: str = "text",
    table_prompt: str = "USER: Say something about {topic}.",
    table_kind: str = "style",
    identity_profile: str | None = None,
    identity_template: str = "data/identity_training_template.json",
    multi_turn: bool = False,
    tokenizer: str = "checkpoints/tiny-politician",
    max_completion_tokens: int = 200,
    min_completion_words: int = 5,
    max_prompt_tokens: int = 256,
    val_fraction: float = 0.1,
    seed: int = 42,
    near_dup_threshold: float = 0.8,
    cluster_threshold: float = 0.5,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Turn raw transcripts, tables of posts and a profile into train.jsonl, val.jsonl and stats.json.

    Args:
        output_dir: Folder to write train.jsonl, val.jsonl and stats.json to (replaced as a whole, atomically).
        transcripts: Speech transcripts (.txt/.md files or folders of them) -> "style" continuation examples.
        interviews: Interview or press transcripts with speaker labels (.txt/.md or folders) -> "policy" Q->A examples.
        speaker: The politician's label in interviews, e.g. "THE PRESIDENT" (case-insensitive; comma-separate aliases).
        table: CSV, JSON (list of objects) or JSONL files of posts or quotes, one example per row.
        text_column: Column of the tables that holds the politician's text.
        table_prompt: Prompt for table rows; {topic} (default "anything") and any other column name can be used.
        table_kind: The kind given to table examples (style, policy, ...).
        identity_profile: Profile YAML (path, or a name in data/profiles) -> "identity" examples from the template.
        identity_template: JSON list of identity question/answer templates with {name}-style placeholders.
        multi_turn: Also write each interview answer as a chat record with up to 3 earlier exchanges as context.
        tokenizer: Tokenizer (model folder or hub id) that counts tokens; use the base model you will train.
        max_completion_tokens: Longest completion in tokens; speech passages are cut to fit it.
        min_completion_words: Drop examples whose completion has fewer words.
        max_prompt_tokens: Longest prompt in tokens (long questions keep their last sentences).
        val_fraction: Share of records (whole near-duplicate clusters) held out in val.jsonl.
        seed: Seed of the split hash (the same rule as the DataModule's split).
        near_dup_threshold: Drop a record whose word 3-gram Jaccard similarity with an earlier kept one is at least this.
        cluster_threshold: Records at least this similar are kept together on one side of the split.
        skip_bad: Skip and count bad lines and unusable transcript files instead of stopping at the first one.
        overwrite: Replace output_dir if it exists.

    Returns:
        The output folder.
    """
    settings = dict(locals())  # the arguments, recorded in stats.json
    transcripts, interviews, table = (_as_list(v) for v in (transcripts, interviews, table))
    out = check_output(output_dir, overwrite)
    if not (transcripts or interviews or table or identity_profile):
        raise UserError("nothing to prepare: pass --transcripts, --interviews, --table and/or --identity_profile")
    speakers = {src.norm_label(s) for s in (speaker or "").split(",") if s.strip()}
    if interviews and not speakers:
        raise UserError(f"{interviews[0]}: --interviews needs --speaker, the politician's label (e.g. 'THE PRESIDENT')")
    for name, value, ok in (("val_fraction", val_fraction, 0 < val_fraction < 1),
                            ("near_dup_threshold", near_dup_threshold, 0 < near_dup_threshold <= 1),
                            ("cluster_threshold", cluster_threshold, 0 < cluster_threshold <= 1),
                            ("max_completion_tokens", max_completion_tokens, max_completion_tokens >= 1),
                            ("max_prompt_tokens", max_prompt_tokens, max_prompt_tokens >= 1),
                            ("min_completion_words", min_completion_words, min_completion_words >= 0)):
        if not ok:
            raise UserError(f"--{name} {value} is out of range (fractions and thresholds: 0-1, token limits: >= 1)")

    # Read and check every input before anything heavy loads.
    speech_files = src.expand(transcripts, src.TEXT_SUFFIXES, "transcripts", skip=out)
    interview_files = src.expand(interviews, src.TEXT_SUFFIXES, "interviews", skip=out)
    table_files = src.expand(table, src.TABLE_SUFFIXES, "table", skip=out)
    fields = src.placeholders(table_prompt, "--table_prompt")
    template, entries, values = Path(identity_template), [], {}
    if identity_profile:
        values = src.profile_values(src.load_profile_file(identity_profile))
        if not template.is_file():
            raise UserError(f"{template}: identity template not found; pass --identity_template")
        entries = src.load_identity_template(template)
    dropped: Counter[str] = Counter()
    speeches, talks, rows = [], [], []
    jobs = [(p, "s") for p in speech_files] + [(p, "i") for p in interview_files] + [(p, "t") for p in table_files]
    for path, what in _bar(jobs, "Reading", "file", 20):
        try:
            if what == "s":
                speeches.append((path, src.read_speech(path, speakers)))
            elif what == "i":
                talks.append((path, src.read_interview(path, speakers)))
            else:
                rows += _table_rows(path, text_column, table_prompt, fields, skip_bad, dropped)
        except src.BadFile:
            if not skip_bad:
                raise
            dropped["bad_file"] += 1

    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{tokenizer}: cannot load a tokenizer ({first}); "
                        "pass --tokenizer <model folder or hub id>") from None
    b = _Builder(tok, max_completion_tokens, min_completion_words, max_prompt_tokens)
    b.dropped.update(dropped)
    for path, paragraphs in _bar(speeches, "Speeches", "file", 20):
        b.speech(path, paragraphs)
    for path, turns in _bar(talks, "Interviews", "file", 20):
        b.interview(path, turns, speakers, multi_turn)
    for prompt, text, meta in _bar(rows, "Table rows", "row", 2000):
        b.pair(prompt, text, table_kind, meta)
    b.identity(template, entries, values)

    roots = _dedupe(b.items, near_dup_threshold, cluster_threshold)
    b.dropped.update(i.dropped for i in b.items if i.dropped)
    val_roots = {r for r in set(roots.values())
                 if split_bucket(to_conversation(b.items[r].record)["messages"], seed) < val_fraction}
    train = [i for n, i in enumerate(b.items) if n in roots and roots[n] not in val_roots]
    val = [i for n, i in enumerate(b.items) if n in roots and roots[n] in val_roots]
    if not train or not val:
        raise UserError(f"{out}: val_fraction={val_fraction} leaves an empty {'train' if not train else 'val'} split "
                        f"of {len(roots)} records (dropped: {dict(+b.dropped) or 'none'}); add data or change val_fraction")
    stats = _stats(train, val, len(set(roots.values())), b.dropped, settings)
    with atomic_dir(out) as tmp:
        for name, items in (("train.jsonl", train), ("val.jsonl", val)):
            lines = "".join(json.dumps(i.record, ensure_ascii=False) + "\n" for i in items)
            (tmp / name).write_text(lines, encoding="utf-8")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(_summary(out, stats))
    return out
