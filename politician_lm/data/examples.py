"""Examples for the DataModule: JSONL read into conversations (or preference pairs), the hash split, and the
tokenized rows with completion-only labels, as ``datasets`` tables (cached on disk by ``datasets``)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets, load_dataset
from datasets.exceptions import DatasetGenerationError

from politician_lm.batch import IGNORE_INDEX
from politician_lm.data import records
from politician_lm.data.pairs import tokenize_pair
from politician_lm.data.templates import PromptStyle, warn_template_system_prompt
from politician_lm.data.tokenize import Overlong, adds_bos, encode
from politician_lm.errors import UserError

log = logging.getLogger(__name__)


def load_file(path: Path, cache_dir: str | None, preference: bool = False) -> Dataset:
    """One JSONL file as conversations (or preference pairs); a file ``datasets`` cannot read is one line."""
    try:
        ds = load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
    except DatasetGenerationError as e:  # e.g. a key whose type changes between lines
        raise UserError(
            f"{path}: could not be read as a table ({e.__cause__ or e}); keep each key's type the same on every line"
        ) from None
    convert = records.to_preference if preference else records.to_conversation
    return ds.map(convert, remove_columns=ds.column_names, desc=f"Reading {path.name}")


def validated(files: records.DataFiles, preference: bool, kinds: list[str] | None) -> dict[Path, int]:
    """``records.validate``'s record count per file; with ``kinds``, a split (train, val) that holds none of them is
    one line now, before any model loads (``read_examples`` would find it only when its ``stages`` stage starts)."""
    found = records.validate(files, preference)
    for split in (files.train, files.val) if kinds else ():
        held = {kind for p in split for kind in found[p]}
        if split and not held & set(kinds):
            raise UserError(f"no records of kind {sorted(kinds)} in {split[0].parent} (its records' kinds: "
                            f"{', '.join(sorted(k or '(none)' for k in held))})")  # fmt: skip
    return {p: per_kind.total() for p, per_kind in found.items()}


def read_examples(
    files: tuple[Path, ...], cache_dir: str | None, preference: bool, kinds: list[str] | None, data_path: str
) -> Dataset:
    """Every file of a split, concatenated, keeping only ``kinds`` when given."""
    ds = concatenate_datasets([load_file(p, cache_dir, preference) for p in files])
    if kinds:
        wanted = set(kinds)
        ds = ds.filter(lambda kind: kind in wanted, input_columns="kind", desc="Selecting kinds")
        if len(ds) == 0:
            raise UserError(f"no records of kind {sorted(wanted)} in {data_path}")
    return ds


def hash_split(ds: Dataset, seed: int, val_fraction: float, data_path: str) -> tuple[Dataset, Dataset]:
    """Seeded hash split (``records.is_heldout``): stable as records are added, duplicates together."""
    ds = ds.map(
        lambda m: {"val": records.is_heldout(m, seed, val_fraction)}, input_columns="messages", desc="Splitting"
    )
    val = ds.filter(lambda v: v, input_columns="val")
    train = ds.filter(lambda v: not v, input_columns="val")
    if len(val) == 0 or len(train) == 0:
        raise UserError(
            f"{data_path}: val_fraction={val_fraction} leaves an empty train or val split of "
            f"{len(ds)} records; change val_fraction or add a val.jsonl"
        )
    return train, val


def tokenize_row(
    row: dict, tokenizer: Any, style: PromptStyle, max_length: int, overlong: Overlong, add_bos: bool
) -> dict:
    prompt, completion = style.render(row["messages"], tokenizer)
    return encode(tokenizer, prompt, completion, max_length, overlong, add_bos)


def tokenize_examples(
    ds: Dataset,
    split: str,
    tokenizer: Any,
    style: PromptStyle,
    max_length: int,
    overlong: Overlong,
    preference: bool,
) -> Dataset:
    """Rendered and tokenized rows (pairs for DPO), overlong ones truncated or dropped as ``overlong`` says, with a
    warning that counts them; pairs get an ``index`` (the key of their cached reference log-probabilities). The
    training split also warns when the chat template would write a system prompt of its own into every row."""
    if split == "train":
        warn_template_system_prompt(style, tokenizer)
    ds = ds.map(
        tokenize_pair if preference else tokenize_row,
        fn_kwargs=dict(
            tokenizer=tokenizer,
            style=style,
            max_length=max_length,
            overlong=overlong,
            add_bos=adds_bos(tokenizer),
        ),
        desc=f"Tokenizing {split}",
    )
    counts = Counter(ds["status"])
    if counts["truncated"] or counts["dropped"]:
        log.warning(
            "%s: %d of %d examples longer than max_length=%d: %d truncated, %d dropped (overlong=%s)",
            split,
            counts["truncated"] + counts["dropped"],
            len(ds),
            max_length,
            counts["truncated"],
            counts["dropped"],
            overlong,
        )
    ds = ds.filter(lambda s: s != "dropped", input_columns="status", desc="Dropping overlong")
    if len(ds) == 0:
        raise UserError(f"every {split} example is longer than max_length={max_length}; raise max_length")
    if preference:
        ds = ds.add_column("index", list(range(len(ds))))
    return ds


def prompt_only(row: dict) -> dict:
    """A tokenized row cut before its first labelled token (what ``predict`` generates from)."""
    n_prompt = next((i for i, t in enumerate(row["labels"]) if t != IGNORE_INDEX), len(row["labels"]))
    return {"input_ids": row["input_ids"][:n_prompt]}


def anchor_files(anchor_path: str, preference: bool, data_path: str) -> records.DataFiles:
    """The files of ``data.anchor_path``, checked before any heavy work: only a preference stage takes an anchor,
    and an anchor is prompt/completion records, not pairs."""
    if not preference:
        raise UserError(
            f"{data_path}: holds SFT records, and data.anchor_path only anchors a preference stage; drop anchor_path"
        )
    files = records.discover(anchor_path)
    if records.detect_preference(files):
        raise UserError(
            f"{anchor_path}: data.anchor_path holds preference pairs; give it SFT records (e.g. the SFT stage's data)"
        )
    records.validate(files)
    return files


def read_anchor(files: records.DataFiles, cache_dir: str | None, seed: int, val_fraction: float, path: str) -> Dataset:
    """An anchor's training records only: its ``train.jsonl``, or the train side of the hash split an SFT fit on it
    makes (same ``seed`` and ``val_fraction``), so its validation and held-out records stay unseen."""
    train = read_examples(files.train, cache_dir, False, None, path)
    return train if files.val else hash_split(train, seed, val_fraction, path)[0]
