"""The steps of ``prepare``: read and check every input, load the tokenizer, build the records, write the folder."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from politician_lm.artifacts.atomic import atomic_dir
from politician_lm.artifacts.jsonl import write_jsonl
from politician_lm.artifacts.profiles import load_profile_spec
from politician_lm.data.prepare.build import Candidate, RecordBuilder
from politician_lm.data.prepare.files import TABLE_SUFFIXES, TEXT_SUFFIXES, BadFile, expand
from politician_lm.data.prepare.identity import IdentityEntry, load_identity_template, profile_values
from politician_lm.data.prepare.placeholders import placeholders
from politician_lm.data.prepare.progress import progress_bar
from politician_lm.data.prepare.tables import TableExample, examples_from_table
from politician_lm.data.prepare.transcripts import Paragraph, Turn, read_interview, read_speech
from politician_lm.errors import UserError


class InputKind(Enum):
    SPEECH = "speech"
    INTERVIEW = "interview"
    TABLE = "table"


@dataclass
class Inputs:
    """Every input, read and checked; nothing here needs the tokenizer."""

    identity_template: Path
    identity_entries: list[IdentityEntry] = field(default_factory=list)
    profile_values: dict[str, str] = field(default_factory=dict)
    speeches: list[tuple[Path, list[Paragraph]]] = field(default_factory=list)
    interviews: list[tuple[Path, list[Turn]]] = field(default_factory=list)
    table_examples: list[TableExample] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)


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
) -> Inputs:
    """Find, read and check every input (files inside ``output_dir`` are never read back)."""
    speech_files = expand(transcripts, TEXT_SUFFIXES, "transcripts", skip=output_dir)
    interview_files = expand(interviews, TEXT_SUFFIXES, "interviews", skip=output_dir)
    table_files = expand(table, TABLE_SUFFIXES, "table", skip=output_dir)
    prompt_fields = placeholders(table_prompt, "--table_prompt")
    inputs = Inputs(Path(identity_template))
    if identity_profile:
        inputs.profile_values = profile_values(load_profile_spec(identity_profile))
        if not inputs.identity_template.is_file():
            raise UserError(f"{inputs.identity_template}: identity template not found; pass --identity_template")
        inputs.identity_entries = load_identity_template(inputs.identity_template)
    jobs = (
        [(p, InputKind.SPEECH) for p in speech_files]
        + [(p, InputKind.INTERVIEW) for p in interview_files]
        + [(p, InputKind.TABLE) for p in table_files]
    )
    for path, kind in progress_bar(jobs, "Reading", "file", 20):
        try:
            if kind is InputKind.SPEECH:
                inputs.speeches.append((path, read_speech(path, speakers)))
            elif kind is InputKind.INTERVIEW:
                inputs.interviews.append((path, read_interview(path, speakers)))
            else:
                inputs.table_examples += examples_from_table(
                    path, text_column, table_prompt, prompt_fields, skip_bad, inputs.dropped
                )
        except BadFile:
            if not skip_bad:
                raise
            inputs.dropped["bad_file"] += 1
    return inputs


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
    """Every input's records into ``builder``, in input order: speeches, interviews, tables, identity."""
    builder.dropped.update(inputs.dropped)
    for path, paragraphs in progress_bar(inputs.speeches, "Speeches", "file", 20):
        builder.add_speech(path, paragraphs)
    for path, turns in progress_bar(inputs.interviews, "Interviews", "file", 20):
        builder.add_interview(path, turns, speakers, multi_turn)
    for prompt, text, meta in progress_bar(inputs.table_examples, "Table rows", "row", 2000):
        builder.add_pair(prompt, text, table_kind, meta)
    builder.add_identity(inputs.identity_template, inputs.identity_entries, inputs.profile_values)


def write_prepared(out: Path, train: list[Candidate], val: list[Candidate], stats: dict[str, Any]) -> None:
    """``train.jsonl``, ``val.jsonl`` and ``stats.json``, written to a temporary folder renamed into place."""
    with atomic_dir(out) as tmp:
        for name, candidates in (("train.jsonl", train), ("val.jsonl", val)):
            write_jsonl(tmp / name, (c.record for c in candidates))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
