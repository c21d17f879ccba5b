"""The steps of ``prepare``: read and check every input, load the tokenizer, build the records, write the folder."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from politician_lm.artifacts.atomic import atomic_dir
from politician_lm.artifacts.jsonl import read_jsonl, write_jsonl
from politician_lm.artifacts.profiles import load_profile_spec, profile_file
from politician_lm.artifacts.stances import Stance, heldout_stance_problem, load_stances, split_stances
from politician_lm.data.corpora import corpus_documents, corpus_heldout, corpus_politician, corpus_speaker
from politician_lm.data.prepare.build import Candidate, RecordBuilder
from politician_lm.data.prepare.files import TABLE_SUFFIXES, TEXT_SUFFIXES, BadFile, expand
from politician_lm.data.prepare.identity import IdentityEntry, load_identity_template, profile_values
from politician_lm.data.prepare.placeholders import placeholders
from politician_lm.data.prepare.progress import progress_bar
from politician_lm.data.prepare.split import record_documents
from politician_lm.data.prepare.tables import TableExample, examples_from_table
from politician_lm.data.prepare.transcripts import Paragraph, Turn, read_interview, read_speech, speech_paragraphs
from politician_lm.data.records import check_record, validate_file
from politician_lm.errors import UserError


class InputKind(Enum):
    SPEECH = "speech"
    INTERVIEW = "interview"
    TABLE = "table"
    RECORDS = "records"


@dataclass
class Speech:
    """A speech's paragraphs; ``name`` is the ``source`` of its records (a file name or a corpus document id)."""

    name: str
    paragraphs: list[Paragraph]
    meta: dict[str, Any] = field(default_factory=dict)  # a corpus document's "date" and "title"


def check_one_politician(given: dict[str, str], loaded: dict[str, dict[str, Any]]) -> None:
    """A one-line UserError when ``--identity_profile`` and ``--stances`` (``given``, their ``loaded`` profiles) are
    two politicians' profiles."""
    if len(loaded) == 2 and loaded["identity_profile"]["name"] != loaded["stances"]["name"]:
        raise UserError(
            f"--identity_profile {given['identity_profile']} is {loaded['identity_profile']['name']}'s profile but "
            f"--stances {given['stances']} is {loaded['stances']['name']}'s; give both the same politician's profile"
        )


def check_corpus_politician(corpus: list[str], files: dict[str, Path], loaded: dict[str, dict[str, Any]]) -> None:
    """A one-line UserError when a profile (``--identity_profile``, ``--stances``: its ``files`` and ``loaded``
    content) is not the profile of the politician whose speeches ``--corpus`` reads: by its file name, or by the
    last word of its ``name`` (``bush-43``: ``George W. Bush``)."""
    for spec in corpus:
        who = corpus_politician(spec)
        last = re.sub(r"-\d+$", "", who)
        for option, profile in loaded.items():
            full = re.sub(r"[\s_]+", "-", str(profile.get("name", "")).strip().lower())
            if files[option].stem.lower() not in (who, last) and not full.endswith(last):
                raise UserError(
                    f"--corpus {spec} reads {who}'s speeches but --{option} {files[option]} is "
                    f"{profile.get('name')}'s profile; give {who}'s profile, or none"
                )


@dataclass
class Inputs:
    """Every input, read and checked; nothing here needs the tokenizer."""

    identity_template: Path
    identity_entries: list[IdentityEntry] = field(default_factory=list)
    profile_values: dict[str, str] = field(default_factory=dict)
    speeches: list[Speech] = field(default_factory=list)
    interviews: list[tuple[Path, list[Turn]]] = field(default_factory=list)
    table_examples: list[TableExample] = field(default_factory=list)
    records: list[tuple[Path, list[dict[str, Any]]]] = field(default_factory=list)
    stances: list[Stance] = field(default_factory=list)  # the profile's training statements (never held-out ones)
    stances_source: str = ""
    profiles: dict[str, str] = field(default_factory=dict)  # prepare option -> profile file name (stats.json)
    heldout_stances: list[str] = field(default_factory=list)  # the ids evaluate probes, never trained
    # every document a whole-document split can name: transcript file names and corpus document ids, in input order
    documents: list[str] = field(default_factory=list)
    corpus_documents: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {"date", "title"}
    default_heldout: list[str] = field(default_factory=list)  # each --corpus entry's corpus_heldout
    dropped: Counter[str] = field(default_factory=Counter)


def read_records(path: Path, skip_bad: bool = False, dropped: Counter | None = None) -> list[dict[str, Any]]:
    """A JSONL file of ready-made records, validated (``UserError`` naming ``file:line``); with ``skip_bad``, bad
    lines are counted in ``dropped`` (``bad_line``) instead, and a file without a usable record is a ``BadFile``."""
    if not skip_bad:
        validate_file(path, allow_bom=True)  # a user's file, as editors save it; prepare writes none
        rows = list(read_jsonl(path, allow_bom=True))
        for lineno, obj in rows:
            if problem := heldout_stance_problem(obj):
                raise UserError(f"{path}:{lineno}: {problem}")
        return [obj for _, obj in rows]
    count = dropped if dropped is not None else Counter()
    rows = []
    for _, obj in read_jsonl(path, lambda _: count.update(["bad_line"]), allow_bom=True, error=BadFile):
        if check_record(obj):
            count["bad_line"] += 1
        elif heldout_stance_problem(obj):
            count["heldout_stance"] += 1
        else:
            rows.append(obj)
    if not rows:
        raise BadFile(f"{path}: no usable record")
    return rows


def read_inputs(
    transcripts: list[str] | None,
    interviews: list[str] | None,
    table: list[str] | None,
    speakers: set[str],
    text_column: str,
    table_prompt: str,
    identity_profile: str | None,
    identity_template: str,
    skip_bad: bool,
    output_dir: Path,
    corpus: list[str] | None = None,
    records: list[str] | None = None,
    stances: str | None = None,
) -> Inputs:
    """Find, read and check every input (files inside ``output_dir`` are never read back)."""
    speech_files = expand(transcripts, TEXT_SUFFIXES, "transcripts", skip=output_dir)
    interview_files = expand(interviews, TEXT_SUFFIXES, "interviews", skip=output_dir)
    table_files = expand(table, TABLE_SUFFIXES, "table", skip=output_dir)
    record_files = expand(records, (".jsonl",), "records", skip=output_dir)
    prompt_fields = placeholders(table_prompt, "--table_prompt")
    inputs = Inputs(Path(identity_template))
    inputs.documents = [p.name for p in speech_files + interview_files]
    by_name: dict[str, set[Path]] = {}
    for path in speech_files + interview_files:
        by_name.setdefault(path.name, set()).add(path.resolve())
    for name, paths in by_name.items():
        if len(paths) > 1:  # records, stats and --heldout_documents name a document by its file name
            shown = ", ".join(sorted(str(p) for p in paths)[:3])
            raise UserError(f"{len(paths)} input files are named {name} ({shown}); rename all but one")
    documents = []
    for spec in dict.fromkeys(corpus or []):
        found = corpus_documents(spec)
        documents += [(d, speakers | {corpus_speaker(spec)}) for d in found]
        inputs.default_heldout += [corpus_heldout(spec)] if found else []  # the latest spoken address
    for d, _ in documents:
        inputs.documents.append(d.id)
        inputs.corpus_documents[d.id] = {"date": d.date, "title": d.title}
    given = {k: v for k, v in (("identity_profile", identity_profile), ("stances", stances)) if v}
    files = {k: profile_file(v) for k, v in given.items()}  # each profile resolved and read once
    loaded = {k: load_profile_spec(str(f)) for k, f in files.items()}
    check_one_politician(given, loaded)
    check_corpus_politician(list(dict.fromkeys(corpus or [])), files, loaded)
    inputs.profiles = {k: f.stem for k, f in files.items()}
    named = {corpus_politician(spec) for spec in corpus or []}
    if len(named) == 1 and not inputs.profiles:  # one politician's speeches, and no profile that names them
        inputs.profiles["corpus"] = named.pop()
    if identity_profile:
        inputs.profile_values = profile_values(loaded["identity_profile"])
        if not inputs.identity_template.is_file():
            raise UserError(f"{inputs.identity_template}: identity template not found; pass --identity_template")
        inputs.identity_entries = load_identity_template(inputs.identity_template)
    if stances:
        inputs.stances, held = split_stances(load_stances(loaded["stances"], str(files["stances"])))
        inputs.stances_source, inputs.heldout_stances = f"stances:{stances}", [s.id for s in held]
        if held and not inputs.stances:
            raise UserError(
                f"{stances}: all {len(held)} statements are held out (a hash of each id puts about a quarter there); "
                "add statements, so that some train"
            )
        if not inputs.stances:
            raise UserError(f"{stances}: the profile has no stances; add a 'stances' list to it")
    jobs = (
        [(p, InputKind.SPEECH) for p in speech_files]
        + [(p, InputKind.INTERVIEW) for p in interview_files]
        + [(p, InputKind.TABLE) for p in table_files]
        + [(p, InputKind.RECORDS) for p in record_files]
    )
    for path, kind in progress_bar(jobs, "Reading", "file", 20):
        try:
            if kind is InputKind.SPEECH:
                inputs.speeches.append(Speech(path.name, read_speech(path, speakers)))
            elif kind is InputKind.INTERVIEW:
                inputs.interviews.append((path, read_interview(path, speakers)))
            elif kind is InputKind.TABLE:
                inputs.table_examples += examples_from_table(
                    path, text_column, table_prompt, prompt_fields, skip_bad, inputs.dropped
                )
            else:
                inputs.records.append((path, read_records(path, skip_bad, inputs.dropped)))
        except BadFile:
            if not skip_bad:
                raise
            inputs.dropped["bad_file"] += 1
    for d, own in progress_bar(documents, "Reading", "document", 20):
        try:  # a corpus document is a speech like a transcript file, named by its id
            paragraphs = speech_paragraphs(d.id, d.text, own)
        except BadFile:
            if not skip_bad:
                raise
            inputs.dropped["bad_file"] += 1
            continue
        inputs.speeches.append(Speech(d.id, paragraphs, {"date": d.date, "title": d.title}))
    return inputs


def resolve_heldout(names: list[str], inputs: Inputs) -> list[str]:
    """The held-out documents, each an input document's id or file name, or the ``source`` of ready-made records (a
    path is matched by its name; case aside where one document alone matches: ``1988-reagan-1``)."""
    known = dict.fromkeys([*inputs.documents, *record_documents(inputs.records)])
    folded: dict[str, list[str]] = {}
    for doc in known:
        folded.setdefault(doc.lower(), []).append(doc)
    out = []
    for name in names:
        found = name if name in known else Path(name).name if Path(name).name in known else None
        if found is None and len(alike := folded.get(Path(name).name.lower(), [])) == 1:
            found = alike[0]
        if found is None:
            listed = list(known)
            more = f", and {len(listed) - 30} more" if len(listed) > 30 else ""
            raise UserError(
                f"--heldout_documents {name!r}: no input document has this id or file name; "
                f"known: {', '.join(listed[:30]) + more if listed else 'none (pass --corpus or --transcripts)'}"
            )
        out.append(found)
    return list(dict.fromkeys(out))


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"{name}: cannot load a tokenizer ({first}); pass --tokenizer <model folder or hub id>"
        ) from None


def build_records(
    builder: RecordBuilder, inputs: Inputs, speakers: set[str], multi_turn: bool, table_kind: str
) -> None:
    """Every input's records into ``builder``, in input order: speeches (transcript files, then corpus documents),
    interviews, tables, ready-made records, identity."""
    builder.dropped.update(inputs.dropped)
    for speech in progress_bar(inputs.speeches, "Speeches", "file", 20):
        builder.add_speech(speech.name, speech.paragraphs, speech.meta)
    for path, turns in progress_bar(inputs.interviews, "Interviews", "file", 20):
        builder.add_interview(path, turns, speakers, multi_turn)
    for prompt, text, meta in progress_bar(inputs.table_examples, "Table rows", "row", 2000):
        builder.add_pair(prompt, text, table_kind, meta)
    for path, rows in inputs.records:
        builder.add_records(path, rows)
    builder.add_identity(inputs.identity_template, inputs.identity_entries, inputs.profile_values)
    builder.add_stances(inputs.stances_source, inputs.stances)


def write_prepared(out: Path, parts: dict[str, list[Candidate]], stats: dict[str, Any]) -> None:
    """``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (when documents are held out) and ``stats.json``, written to a
    temporary folder renamed into place."""
    with atomic_dir(out) as tmp:
        for part, candidates in parts.items():
            if candidates or part != "test":
                write_jsonl(tmp / f"{part}.jsonl", (c.record for c in candidates))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
