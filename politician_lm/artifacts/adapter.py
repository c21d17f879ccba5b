"""Adapter folders: PEFT's own files (its config read as JSON, without peft) plus
``politician_lm.json`` (``artifacts.adapter_metadata``), and checks of base model folders, all before any weights
are loaded."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from politician_lm.artifacts.adapter_metadata import (  # noqa: F401  (re-exported: the adapter folder's metadata)
    METADATA_FILE,
    AdapterMetadata,
    read_metadata,
    write_metadata,
)
from politician_lm.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
PEFT_DEFAULT_RANK = 8  # LoraConfig's r where adapter_config.json leaves it out
TRAINING_PROGRESS = ("global_step", "epoch", "monitor", "best_score")  # describes one training run's export only


@dataclass
class AdapterFolder:
    """A validated adapter folder: its PEFT config as saved and the politician-lm metadata saved next to it.

    ``settings`` is ``adapter_config.json`` as a mapping: the checks before any weights load read it, so a refusal
    does not wait for peft to import (about 10 s on 2 cores); PEFT reads the file itself when the weights load
    (``model.adapters.attach_adapter``, whose errors are one line too).
    """

    path: Path
    settings: dict[str, Any] | None  # adapter_config.json; None for a merged adapter's source, read for metadata only
    metadata: AdapterMetadata = field(default_factory=dict)  # type: ignore[assignment]

    @property
    def base_model(self) -> str:
        """Where the base model is: the name in the PEFT config (as given at training) located by the absolute path
        recorded next to it at export while that folder exists, else the name itself (a folder relative to the
        working directory or to this adapter folder, or a hub id)."""
        name = self.setting("base_model_name_or_path") or self.metadata.get("base_model") or ""
        if self.saved_base_path and Path(self.saved_base_path).is_dir():
            return self.saved_base_path
        if name and not Path(name).exists() and (self.path / name).is_dir():
            return str(self.path / name)
        return name

    @property
    def saved_base_path(self) -> str | None:
        """The absolute base folder recorded at export, if it belongs to the base the PEFT config names."""
        name = self.setting("base_model_name_or_path") or self.metadata.get("base_model")
        saved = self.metadata.get("base_model_path")
        return str(saved) if saved and name == self.metadata.get("base_model") else None

    @property
    def target_modules(self) -> frozenset[str] | str:
        tm = self.setting("target_modules")
        return frozenset(tm) if isinstance(tm, (list, set, frozenset)) else str(tm)

    @property
    def rank(self) -> int:
        return int(self.setting("r") or PEFT_DEFAULT_RANK)

    @property
    def use_dora(self) -> bool:
        return bool(self.setting("use_dora"))

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.setting("fan_in_fan_out"))

    def setting(self, key: str) -> Any:
        """A key of ``adapter_config.json`` as saved (None where absent), without building PEFT's config."""
        return (self.settings or {}).get(key)


def _check_safetensors(path: Path) -> None:
    try:
        with safe_open(str(path), framework="numpy") as fh:  # the header only: no torch import
            keys = list(fh.keys())
    except Exception as e:  # safetensors raises several types for truncated or foreign files
        raise UserError(
            f"{path}: not a readable safetensors file ({type(e).__name__}); re-export the adapter"
        ) from None
    if not keys:
        raise UserError(f"{path}: holds no tensors; re-export the adapter")


def read_adapter(path: str | Path, allow_pickle: bool = False) -> AdapterFolder:
    """Validate an adapter folder: config present and parseable, weights present, safetensors unless allowed."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: adapter folder does not exist")
    cfg_path = path / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise UserError(f"{path}: missing {ADAPTER_CONFIG}; this is not a PEFT adapter folder")
    try:
        settings = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(settings, dict):
        raise UserError(f"{cfg_path}: not a PEFT adapter config (a JSON {type(settings).__name__}, not an object)")
    if str(settings.get("peft_type", "")).upper() != "LORA":
        raise UserError(f"{cfg_path}: not a LoRA adapter config (peft_type {settings.get('peft_type')!r})")
    rank = settings.get("r", PEFT_DEFAULT_RANK)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserError(f"{cfg_path}: not a PEFT adapter config (r is {rank!r}, not a positive whole number)")
    if (path / SAFE_WEIGHTS).is_file():
        _check_safetensors(path / SAFE_WEIGHTS)
    elif (path / PICKLE_WEIGHTS).is_file():
        if not allow_pickle:
            raise UserError(
                f"{path / PICKLE_WEIGHTS}: pickle weights can run code when loaded; convert to safetensors "
                "or pass --allow_pickle true if you trust the source"
            )
    else:
        raise UserError(f"{path}: missing {SAFE_WEIGHTS}")
    return AdapterFolder(path=path, settings=settings, metadata=read_metadata(path))


def same_model(a: str, b: str) -> bool:
    """Two base-model references name the same model (a hub id, or the same folder however it is written)."""
    if a == b:
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.realpath(a) == os.path.realpath(b)


def resolve_base(folder: AdapterFolder | None, explicit: str | None) -> str:
    """The base model to load: ``explicit`` (``--base_model``) wins, else the adapter's own reference. An adapter
    trained on a local folder that is no longer where it was asks for ``--base_model`` instead of trying the hub."""
    if explicit:
        return explicit
    if folder is None:
        return ""
    base = folder.base_model
    saved = folder.saved_base_path
    if saved and not Path(base).is_dir():
        raise UserError(
            f"{folder.path}: its base model folder {saved} is gone (trained on "
            f"{folder.metadata.get('base_model')!r}); pass --base_model with where that model is now"
        )
    return base


def check_base_model(path: str, allow_pickle: bool = False) -> None:
    """A local base model folder must hold safetensors weights unless pickle is explicitly allowed."""
    folder = Path(path)
    if not folder.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", path) and not path.startswith("."):
            return  # a hub id: transformers resolves it (use_safetensors=True refuses pickle weights there)
        raise UserError(f"{path}: base model folder does not exist")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: missing config.json; not a Hugging Face model folder")
    if not list(folder.glob("*.safetensors")):
        if not list(folder.glob("*.bin")):
            raise UserError(f"{folder}: no model weights (*.safetensors) found")
        if not allow_pickle:
            raise UserError(
                f"{folder}: only pickle (*.bin) weights, which can run code when loaded; convert to "
                "safetensors or pass --allow_pickle true if you trust the source"
            )


def check_one_base(folders: Sequence[AdapterFolder], persona: str | None = None) -> None:
    """Adapters applied together must have been trained on one base; ``persona`` names the served persona."""
    if not folders:
        return
    first = folders[0]
    for f in folders[1:]:
        if same_model(f.base_model, first.base_model):
            continue
        if persona is not None:  # serve: the persona whose adapters disagree is the thing to fix
            raise UserError(
                f"persona {persona!r}: {f.path} was trained on {f.base_model!r}, {first.path} on "
                f"{first.base_model!r}; a persona's adapters need one base"
            )
        raise UserError(
            f"{f.path}: trained on base model {f.base_model!r}, but {first.path} on "
            f"{first.base_model!r}; use adapters of one base"
        )


def check_fit(base: str, folders: Sequence[AdapterFolder], allow_pickle: bool = False) -> None:
    """The base model folder is safe to load and every adapter's tensor shapes fit it (before any weights load)."""
    check_base_model(base, allow_pickle)
    for f in folders:
        check_fits_base(f, base)


def check_loadable(folders: Sequence[AdapterFolder], base_model: str | None, allow_pickle: bool = False) -> str:
    """``load_persona``'s checks before any weights load (run by ``evaluate`` before torch is imported): the adapters'
    one base, and the base to load (``base_model`` wins) safe to load and fitting each adapter; returns that base
    ("" where neither the adapters nor ``base_model`` name one)."""
    check_one_base(folders)
    base = resolve_base(folders[0] if folders else None, base_model)
    if base:
        check_fit(base, folders, allow_pickle)
    return base


def check_fits_base(folder: AdapterFolder, base: str) -> None:
    """Compare the adapter's LoRA tensor shapes with the base weights' shapes, read from safetensors headers only
    (no weights load): ``[out, in]``, or ``[in, out]`` where the adapter says ``fan_in_fan_out`` (Conv1D layers, as
    in GPT-2). Skipped for hub ids, whose files are not local."""
    base_dir = Path(base)
    files = sorted(base_dir.glob("*.safetensors")) if base_dir.is_dir() else []
    weights = folder.path / SAFE_WEIGHTS
    if not files or not weights.is_file():
        return
    shapes: dict[str, list[int]] = {}
    for f in files:
        with safe_open(str(f), framework="numpy") as fh:
            shapes.update({k: fh.get_slice(k).get_shape() for k in fh.keys()})
    for key, layer, part, shape in lora_shapes(folder):
        if f"{layer}.weight" not in shapes:
            continue
        out_features, in_features = shapes[f"{layer}.weight"][:2]
        if folder.fan_in_fan_out:  # GPT-2's Conv1D keeps its weight as [in, out]
            out_features, in_features = in_features, out_features
        if layer_side(part, shape) != (in_features if part == "A" else out_features):
            raise UserError(
                f"{folder.path}: {key} has shape {shape}, which does not fit {layer} of "
                f"{base} ({out_features}x{in_features}); the adapter belongs to another base model"
            )


def lora_shapes(folder: AdapterFolder) -> list[tuple[str, str, str, list[int]]]:
    """``(key, layer, "A" or "B", shape)`` of each LoRA matrix in the adapter's safetensors weights, read from the
    header alone (``[]`` without them)."""
    weights = folder.path / SAFE_WEIGHTS
    if not weights.is_file():
        return []
    out = []
    with safe_open(str(weights), framework="numpy") as fh:
        for key in fh.keys():
            if match := re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key):
                out.append((key, match.group(1), match.group(2), fh.get_slice(key).get_shape()))
    return out


def layer_side(part: str, shape: list[int]) -> int:
    """The side of its layer a LoRA matrix spans: ``lora_A`` is [r, in], ``lora_B`` [out, r]."""
    return shape[1] if part == "A" else shape[0]


def check_adapter_politician(path: str | Path | None, politician: str | None) -> None:
    """A one-line UserError when the adapter a stage starts from (``model.init_adapter``) was trained for another
    politician than ``data.politician``: the stage would go on from the wrong persona."""
    trained = read_adapter(path).metadata.get("politician") if path and politician else None
    if trained and trained != politician:
        raise UserError(
            f"{path}: the adapter was trained for {trained!r}, but --data.politician is {politician!r}; start from "
            f"{politician}'s adapter, or pass --data.politician {trained}"
        )
