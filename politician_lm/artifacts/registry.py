"""The model registry (``configs/models.yaml``): persona name -> base model, adapters with weights, generation settings.

``generate``, ``chat`` and ``serve`` find a persona by name here; every malformed shape is a one-line ``UserError``
naming the file, raised before any weights load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from politician_lm.errors import UserError

__all__ = ["entry_adapters", "read_registry", "registry_entry"]


def read_registry(registry: str, instead: str = "--adapters") -> dict[str, Any]:
    """The model registry (``configs/models.yaml``) as persona name -> entry; one-line errors name the file and what
    to pass ``instead`` of a registry."""
    path = Path(registry)
    if not path.is_file():
        raise UserError(f"{path}: model registry not found; pass --registry or {instead}")
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({type(e).__name__})") from None
    if not isinstance(entries, dict):
        raise UserError(f"{path}: the registry must map persona names to entries")
    return entries


def registry_entry(politician: str, registry: str) -> dict[str, Any]:
    """Look up a persona in the model registry (``configs/models.yaml``): base model, adapters + weights, generation."""
    path = Path(registry)
    entries = read_registry(registry)
    if politician not in entries:
        raise UserError(f"{path}: no persona {politician!r}; known: {', '.join(sorted(entries)) or 'none'}")
    entry = entries[politician]
    # The shape is checked before any key is read: a string or a list here is a user's typo, not a crash.
    if not isinstance(entry, dict):
        raise UserError(
            f"{path}: persona {politician!r} must be a mapping with base_model, adapters and generation, "
            f"not a {type(entry).__name__}"
        )
    adapters = entry.get("adapters") or []
    if not isinstance(adapters, list) or not all(isinstance(a, dict) and "path" in a for a in adapters):
        raise UserError(f"{path}: persona {politician!r} needs 'adapters' as a list of {{path, weight}}")
    return entry


def entry_adapters(entry: dict[str, Any]) -> tuple[list[str], list[float]]:
    """``(paths, weights)`` of a checked registry entry's adapters (weight 1 where none is given)."""
    adapters = entry.get("adapters") or []
    return [str(a["path"]) for a in adapters], [float(a.get("weight", 1.0)) for a in adapters]
