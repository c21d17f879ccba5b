"""What each adapter ``evaluate`` scores was trained on: its data, followed from a preference stage (DPO, SimPO on a
``politician-lm pairs`` folder) through its ``init_adapter`` back to the SFT data, and the documents that data held
out. ``evaluate`` refuses to score an adapter on documents its training data did not hold out: its loss and style on
them would be read as held out while it trained on them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from politician_lm.artifacts.adapter import AdapterFolder
from politician_lm.data import records
from politician_lm.errors import UserError

__all__ = ["Lineage", "check_held_apart", "evaluated_data", "lineage", "trained_data", "training_config"]

CONFIG_FILE = "training_config.yaml"


def training_config(adapter: str | Path) -> dict[str, Any]:
    """The adapter's ``training_config.yaml`` ({} without one)."""
    cfg_file = Path(adapter) / CONFIG_FILE
    if not cfg_file.is_file():
        return {}
    try:
        return yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise UserError(f"{cfg_file}: not valid YAML; re-export the adapter") from None


def trained_data(adapter: str | Path) -> dict[str, Any]:
    """The ``data`` section of the adapter's ``training_config.yaml`` ({} without one): its data and split."""
    return training_config(adapter).get("data") or {}


def _is_pairs(data_path: str) -> bool:
    """Whether ``data_path`` holds preference pairs (records with ``chosen`` and ``rejected``)."""
    try:
        return records.detect_preference(records.discover(data_path))
    except UserError:  # gone or not JSONL: not pairs we could follow
        return False


@dataclass
class Lineage:
    """The data an adapter was trained on, its own stage's first: ``data`` is the SFT stage's ``data`` section ({}
    where unknown), ``paths`` every stage's data path, ``pairs`` the preference folder that had no SFT stage to
    follow to (None when the chain reached non-pair data)."""

    data: dict[str, Any]
    paths: list[str]
    pairs: str | None = None


def lineage(adapter: str | Path) -> Lineage:
    """Follow ``adapter``'s recorded data: a preference-pairs folder leads through the stage's ``init_adapter`` (its
    ``training_config.yaml``) to the data that adapter was trained on, until the data is not pairs."""
    cfg, paths, seen = training_config(adapter), [], {str(adapter)}
    while True:
        data = cfg.get("data") or {}
        path = data.get("data_path")
        if not path:
            return Lineage({}, paths)
        paths.append(str(path))
        if not _is_pairs(str(path)):
            return Lineage(data, paths)
        init = (cfg.get("model") or {}).get("init_adapter")
        if not init or str(init) in seen or not (Path(init) / CONFIG_FILE).is_file():
            return Lineage(data, paths, str(path))
        seen.add(str(init))
        cfg = training_config(init)


def evaluated_data(first: AdapterFolder, data_path: str | None) -> tuple[str, dict[str, Any]]:
    """``(data_path, the SFT data section)``: the data given, else the data ``first`` was trained on (a preference
    stage's SFT data); one line when there is none to follow."""
    trained = lineage(first.path)
    if not data_path and trained.pairs:
        raise UserError(
            f"{first.path} was trained on the preference pairs {trained.pairs}, whose held-out split is not its "
            "SFT data's, and records no SFT stage (init_adapter) to follow: pass --data_path <the SFT data>"
        )
    if data_path and _is_pairs(data_path):
        sft = f" (for {first.path}: {trained.data['data_path']})" if trained.data.get("data_path") else ""
        raise UserError(
            f"--data_path {data_path} holds preference pairs, not records to score: pass the SFT data the pairs "
            f"were built from{sft}, or leave --data_path out to follow the adapter's stages"
        )
    data_path = data_path or trained.data.get("data_path")
    if not data_path:
        raise UserError(f"{first.path}: the adapter does not record its data; pass --data_path")
    return str(data_path), trained.data


def held_documents(data_path: str) -> set[str] | None:
    """The documents a prepared folder held out (its ``stats.json`` split; none for a hash split), None where the
    data records no split (a file, or a folder without ``stats.json``)."""
    if not (Path(data_path) / "stats.json").is_file():
        return None
    split = records.prepared_split(data_path)
    return set(split.get("heldout_documents") or []) if split.get("rule") == "document" else set()


def _held_sets(folder: AdapterFolder) -> list[set[str]]:
    """What each record of ``folder``'s training says it held out: its metadata's split, and each data folder's."""
    sets = [set(folder.metadata["split"].get("heldout_documents") or [])] if folder.metadata.get("split") else []
    known = (held_documents(p) for p in lineage(folder.path).paths)
    return sets + [s for s in known if s is not None]


def check_held_apart(folders: list[AdapterFolder], documents: list[str]) -> None:
    """One line naming the adapter and the documents when an adapter's training data did not hold out every one of
    ``documents`` (the held-out documents evaluate scores); a warning when an adapter records nothing to tell by.
    A merged adapter is checked through the adapters it was merged from."""
    for folder in folders:
        sources = [s.get("path") for s in folder.metadata.get("merged_from") or []]
        for gone in (p for p in sources if not (p and Path(p).is_dir())):
            print(
                f"warning: {folder.path} was merged from {gone}, which is not here (relative to {Path.cwd()}): "
                f"evaluate cannot tell whether that source trained on {documents}",
                file=sys.stderr,
            )
        parts = [read_part(p) for p in sources if p and Path(p).is_dir()] or [folder]
        for part in parts:
            sets = _held_sets(part)
            if not sets:
                print(
                    f"warning: {part.path} records no split (no split in politician_lm.json, no stats.json in its "
                    f"data): evaluate cannot tell whether it trained on {documents}",
                    file=sys.stderr,
                )
                continue
            trained = sorted(set(documents) - set.intersection(*sets))
            if trained:
                named = folder.path if part is folder else f"{folder.path} (merged from {part.path})"
                raise UserError(
                    f"{named} was trained on data that did not hold out {trained}, which evaluate scores as held out: "
                    "pass --data_path a folder whose test.jsonl holds only documents every adapter held out"
                )


def read_part(path: str) -> AdapterFolder:
    """A merged adapter's source folder, read for its metadata and training config only."""
    from politician_lm.artifacts.adapter import read_metadata

    return AdapterFolder(Path(path), None, read_metadata(path))
