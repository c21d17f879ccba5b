"""``politician_lm.json``: what politician-lm saves next to every adapter, merged adapter and exported model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

from politician_lm.errors import UserError

METADATA_FILE = "politician_lm.json"


class AdapterMetadata(TypedDict, total=False):
    """The schema of ``politician_lm.json``, saved next to every adapter, merged adapter and exported model.

    The prompt keys let generation rebuild exactly the prompt training rendered; the base keys find the base model;
    the rest records where the folder came from.
    """

    prompt_format: str  # plain | chat
    separator: str
    system_prompt: str | None
    politician: str | None
    max_length: int
    split: dict[str, Any]  # leave-one-speech-out: the held-out documents of the prepared data (its stats.json)
    base_model: str  # as named at training (a folder or a hub id)
    base_model_path: str  # that folder's absolute path at export, when it was a folder
    quantization: str  # of the base during training: nf4 | fp4 | int8 | none
    global_step: int
    epoch: int
    monitor: str | None
    best_score: float | None
    merged_from: list[dict[str, Any]]  # merge: [{path, weight}]
    merge_method: str
    merge_density: float | None
    exported_from: str  # export: the adapter merged into the base
    export_dtype: str


def read_metadata(folder: str | Path) -> AdapterMetadata:
    """``politician_lm.json`` of ``folder`` ({} when there is none); one line naming the file when it is not JSON."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid JSON") from None
    if not isinstance(metadata, dict):
        raise UserError(f"{path}: expected a JSON object")
    return metadata  # type: ignore[return-value]


def write_metadata(folder: str | Path, metadata: AdapterMetadata) -> Path:
    """Write ``politician_lm.json`` into ``folder`` atomically."""
    from politician_lm.artifacts.atomic import atomic_write_text

    return atomic_write_text(Path(folder) / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
