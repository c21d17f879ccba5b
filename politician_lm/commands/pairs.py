"""``politician-lm pairs``: preference pairs for DPO, built from prepared data without writing a single answer by hand.

For every record, ``chosen`` is the politician's real answer and ``rejected`` comes from the first source in
``--rejected`` that has one for that prompt:

* ``base``: what the base model writes for the prompt without the persona (its own voice: for a chat template with a
  default system prompt, that one), the voice a persona fine-tune should move away from;
* ``prompt-only``: what the base model writes given only the persona's system prompt (a harder negative);
* ``other``: another politician's answer to the same question, where ``--other_data`` has one;
* ``opposite``: the record's own answer from the opposite position (the ``opposite`` field that ``prepare
  --stances`` writes for each stance record), for positions no other politician's data answers.

Generation is greedy by default, batched, with a progress bar. Every finished batch is appended to a partial file
beside the output (``.<name>.partial.jsonl``), so a killed run resumes where it stopped; the output folder is written
atomically at the end, with one file per input file (same names, so ``train.jsonl``/``val.jsonl`` stay a split).
Pairs whose rejected answer is nearly the chosen one (word-sequence similarity of at least ``--max_similarity``) or
empty are dropped and counted. Each pair records ``rejected_source`` (and ``rejected_model``, ``similarity``).
A pair keeps its record's prompt and answer exactly, so the DataModule's hashed split puts it on the same side
(train or held out) as the record it came from. Not a ``side`` pair, whose chosen answer is the side sentence alone:
from a prepared folder it keeps its record's file (train.jsonl or val.jsonl), but from a single file, which the
DataModule hash-splits, it can land on the other side of the split from its record (prepare with ``val.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from politician_lm.artifacts.atomic import atomic_dir, check_output
from politician_lm.artifacts.jsonl import jsonl_line
from politician_lm.artifacts.profiles import check_prepared_for, load_profile, prepared_for
from politician_lm.commands._pairs_steps import (
    GENERATED,
    PairItem,
    generate_rejected,
    load_partial,
    other_answers,
    pair_record,
    partial_path,
    read_items,
)
from politician_lm.data import records
from politician_lm.data.templates import PromptFormat, PromptStyle
from politician_lm.errors import UserError
from politician_lm.values import parse_list

SOURCES = ("base", "prompt-only", "other", "opposite", "side")

log = logging.getLogger(__name__)


def _check_options(sources: list[str], max_similarity: float, batch_size: int, max_new_tokens: int) -> None:
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise UserError(f"--rejected: unknown source {unknown[0]!r}; use {', '.join(SOURCES)}")
    if not 0.0 < max_similarity <= 1.0:
        raise UserError(f"--max_similarity must be in (0, 1], got {max_similarity}")
    if batch_size < 1 or max_new_tokens < 1:
        raise UserError("--batch_size and --max_new_tokens must be at least 1")


def _check_sources(
    sources: list[str],
    prompt_format: str,
    persona_prompt: str | None,
    other_data: list[str] | str | None,
    base_model: str | None,
) -> None:
    if "prompt-only" in sources and (prompt_format != "chat" or not persona_prompt):
        raise UserError(
            "--rejected prompt-only needs --prompt_format chat and a persona system prompt "
            "(--politician with a profile, or --system_prompt)"
        )
    if any(s in GENERATED for s in sources) and not base_model:
        raise UserError(
            f"--rejected {','.join(sources)} needs --base_model, the model that writes the rejected answers"
        )
    if "other" in sources and not other_data:
        also = ", or --rejected opposite (the other side of each statement)" if "opposite" in sources else ""
        raise UserError(f"--rejected other needs --other_data (another politician's prepared data){also}")


def _settings_digest(settings: list[Any]) -> str:
    """A digest of what the rejected answers depend on: a partial file left by a run with other settings is not
    reused."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _input_files(data_path: str) -> list[Path]:
    """The prepared files, checked: prompt/completion records (not pairs already), one output name per file."""
    files = records.discover(data_path)
    if records.detect_preference(files):
        raise UserError(f"{data_path}: already holds preference pairs; pass prepared prompt/completion data")
    records.validate(files)
    return [*files.train, *files.val, *files.test]


def _check_names(data_path: str, input_files: list[Path]) -> list[str]:
    names = [p.name for p in input_files]
    if len(set(names)) != len(names):
        raise UserError(
            f"{data_path}: two input files are both named {next(n for n in names if names.count(n) > 1)}; "
            "the output keeps one file per input name"
        )
    return names


def pairs(
    data_path: str,
    output_dir: str,
    base_model: str | None = None,
    rejected: list[str] | str = "base",
    politician: str | None = None,
    other_data: list[str] | str | None = None,
    prompt_format: PromptFormat = "plain",
    separator: str = "\n",
    system_prompt: str | None = None,
    kinds: list[str] | str | None = None,
    profiles_dir: str = "data/profiles",
    quantization: str = "nf4",
    max_new_tokens: int = 128,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    max_similarity: float = 0.8,
    balance_positions: bool = False,
    overwrite: bool = False,
) -> Path:
    """Build chosen/rejected preference pairs from prepared data: chosen is the politician's answer, rejected an
    answer from the ``--rejected`` sources (by default the base model's, without persona).

    Args:
        data_path: Prepared data: a .jsonl file or a folder of them (``prompt``/``completion`` or ``messages``).
        output_dir: Folder for the pairs, one .jsonl per input file (written atomically; the input of a DPO fit).
        base_model: Base model folder (or hub id) that writes the rejected answers of ``base`` and ``prompt-only``:
            the one you fine-tune (not needed for ``other``, ``opposite`` and ``side``).
        rejected: Sources of the rejected answer in order of preference, as ``a,b`` or a list: ``base`` (no persona),
            ``prompt-only`` (base given the persona system prompt), ``other`` (another politician's answer to the same
            question, from ``other_data``; prompts without one fall through to the next source), ``opposite`` (the
            record's answer from the opposite position, written by ``prepare --stances``), ``side`` (a minimal
            pair: the politician's side sentence alone, "No, I oppose X.", against the opposite one, "Yes, I support
            X."; nothing else differs, so the preference is on the position and not on the argument; exempt from
            ``max_similarity``; from a single hash-split file a side pair can fall on the other side of the split
            from its record: give a prepared folder). Position pairs: ``side`` with ``--balance_positions true`` (see
            docs/preference-tuning.md), or ``other,opposite`` with the other politician's prepared stances as
            ``other_data``.
        politician: Profile name; supplies the persona system prompt for ``prompt-only``.
        other_data: Other politicians' prepared data (files or folders), for ``other``.
        prompt_format: How prompts are rendered for generation: ``plain`` or ``chat``, as the fit will render them.
        separator: Text after each context turn in the ``plain`` format (default: a newline).
        system_prompt: Persona system prompt for ``prompt-only`` (overrides the profile's).
        kinds: Only records of these kinds, as ``style,policy`` or a list; None keeps all.
        profiles_dir: Folder of ``<politician>.yaml`` profiles.
        quantization: The base model's weights while generating: ``nf4`` (as QLoRA trains it), ``none``, ...
        max_new_tokens: Longest rejected answer.
        batch_size: Prompts generated together.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature (with ``do_sample``).
        top_p: Nucleus sampling mass (with ``do_sample``).
        seed: Seed of sampling (per batch, so a resumed run draws what it would have drawn).
        max_similarity: Drop a pair whose rejected answer is at least this similar to the chosen one (0 to 1).
        balance_positions: In each train file, repeat stance pairs of the less common position (support or oppose)
            until both have as many, so that a preference stage cannot win by the base rate of "Yes".
        overwrite: Replace ``output_dir`` if it exists.
    """
    sources = parse_list(rejected, "rejected")
    _check_options(sources, max_similarity, batch_size, max_new_tokens)
    input_files = _input_files(data_path)
    profile = load_profile(politician, profiles_dir) if politician else {}
    check_prepared_for([data_path], politician, profiles_dir, "--politician")
    persona_prompt = system_prompt if system_prompt is not None else profile.get("system_prompt")
    _check_sources(sources, prompt_format, persona_prompt, other_data, base_model)
    others = other_answers(parse_list(other_data, "other_data")) if "other" in sources else {}
    out = check_output(
        output_dir, overwrite, inputs=[data_path, *(parse_list(other_data, "other_data") if other_data else [])]
    )
    names = _check_names(data_path, input_files)
    kinds = parse_list(kinds, "kinds") if kinds is not None else None
    items = read_items(input_files, kinds)
    if not items:
        found = sorted({item.record.get("kind", "?") for item in read_items(input_files, None)})
        raise UserError(f"{data_path}: no records of kind {kinds} (its records' kinds: {', '.join(found)})")
    for item in items:
        item.choose_source(sources, others)

    bare = PromptStyle(prompt_format=prompt_format, separator=separator)
    styles = {"base": bare, "prompt-only": replace(bare, system_prompt=persona_prompt, politician=politician)}
    generation_settings = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p)
    digest = _settings_digest(
        [base_model, quantization, bare.to_dict(), persona_prompt, max_new_tokens, do_sample, temperature, top_p, seed]
    )
    partial = partial_path(out)
    done = load_partial(partial, digest)
    todo = [i for i in items if i.source in GENERATED and i.key not in done]
    if todo:
        generate_rejected(
            todo, styles, base_model, quantization, batch_size, partial, digest, done, generation_settings, seed
        )
    written, dropped = _pair_lines(items, names, done, max_similarity, base_model)
    if balance_positions:  # the training file's pairs; a single file (split by the DataModule) as a whole
        train = [name for name in written if name.startswith("train")] or list(written)
        written = {name: balanced(rows) if name in train else rows for name, rows in written.items()}
    _write(out, written, data_path, dropped, prepared_for(data_path, profiles_dir))
    partial.unlink(missing_ok=True)
    _report(out, written, dropped)
    return out


def _pair_lines(
    items: list[PairItem], names: list[str], done: dict[str, str], max_similarity: float, base_model: str
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The pair records of each output file, and how many items were dropped for each reason."""
    written: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    dropped = {"similar": 0, "empty": 0, "no source": 0}
    for item in items:
        if item.source == "none":
            dropped["no source"] += 1
            continue
        text = done[item.key] if item.source in GENERATED else item.rejected
        row = pair_record(item, text, max_similarity, base_model)
        if isinstance(row, str):
            dropped[row] += 1
            continue
        written[item.file.name].append(row)
    return written, dropped


def balanced(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the stance pairs of the less common position repeated, in turn, until both positions have as
    many pairs (other rows unchanged)."""
    sides: dict[str, list[dict[str, Any]]] = {"support": [], "oppose": []}
    for row in rows:
        if row.get("position") in sides:
            sides[row["position"]].append(row)
    few, many = sorted(sides.values(), key=len)
    if many and not few:
        log.warning("--balance_positions: every stance pair takes the %r side; nothing to balance", many[0]["position"])
    return rows + [few[i % len(few)] for i in range(len(many) - len(few))] if few else rows


def _write(
    out: Path, written: dict[str, list[dict[str, Any]]], data_path: str, dropped: dict[str, int], profiles: dict
) -> None:
    """The pair files, and ``pairs.json``: the data they came from and its profiles (what fit checks
    ``data.politician`` against)."""
    if not any(written.values()):
        advice = "lower --max_similarity or use another source" if dropped.get("similar") else "use another source"
        raise UserError(f"{data_path}: every pair was dropped ({dropped}); {advice}")
    if "train.jsonl" in written and not written["train.jsonl"]:  # fit would find no training pairs
        raise UserError(
            f"{data_path}: no pair was made from train.jsonl ({dropped}), only from "
            f"{', '.join(k for k, v in written.items() if v)}; train records must make pairs (see --kinds, --rejected)"
        )
    with atomic_dir(out) as tmp:
        for name, rows in written.items():
            if rows:  # a file of nothing but dropped pairs would be an empty (invalid) data file
                (tmp / name).write_text("".join(map(jsonl_line, rows)), encoding="utf-8")
        meta = {"data_path": str(data_path), "profiles": profiles}
        (tmp / "pairs.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _report(out: Path, written: dict[str, list[dict[str, Any]]], dropped: dict[str, Any]) -> None:
    by_source: dict[str, int] = {}
    for rows in written.values():
        for row in rows:
            src = row["rejected_source"].split(":")[0]
            by_source[src] = by_source.get(src, 0) + 1
    total = sum(len(v) for v in written.values())
    print(
        f"wrote {total} pairs to {out} (rejected from {', '.join(f'{k}: {v}' for k, v in by_source.items())}); "
        f"dropped {dropped['similar']} near-identical, {dropped['empty']} empty, {dropped['no source']} without a "
        "source",
        file=sys.stderr,
    )
