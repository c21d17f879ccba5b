"""Which personas a server holds: registry entries or ``NAME=PATH`` adapters, all checked before any weights load."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from politician_lm.artifacts.adapter import read_adapter, resolve_base, same_model
from politician_lm.artifacts.registry import read_registry, registry_entry
from politician_lm.errors import UserError
from politician_lm.model.adapters import adapter_weights, check_fit, check_one_base
from politician_lm.values import parse_list

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class PersonaSpec:
    """A persona to serve: its name (the OpenAI ``model``), adapters with weights, base, generation settings."""

    name: str
    adapters: list[str]
    weights: list[float]
    base_model: str
    generation: dict[str, Any] = field(default_factory=dict)
    registry: str | None = None  # where more personas are read by name at run time


def _check_name(name: str, where: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(f"{where}: persona name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    return name


def _spec(
    name: str,
    adapters: list[str],
    weights: list[float] | None,
    base_model: str | None,
    generation: dict[str, Any],
    allow_pickle: bool,
) -> PersonaSpec:
    folders = [read_adapter(p, allow_pickle) for p in adapters]
    ws = adapter_weights(weights, len(folders))
    base = resolve_base(folders[0], base_model)
    check_one_base(folders, persona=name)
    if len(folders) > 1 and any(f.use_dora for f in folders):
        raise UserError(f"persona {name!r}: DoRA adapters cannot be folded into one adapter; serve them one each")
    return PersonaSpec(name, [str(f.path) for f in folders], ws, base, dict(generation or {}))


def _entry_spec(
    name: str, entry: dict[str, Any], registry: str, base_model: str | None, allow_pickle: bool
) -> PersonaSpec:
    paths = [str(a["path"]) for a in entry.get("adapters") or []]
    if not paths:
        raise UserError(f"{registry}: persona {name!r} lists no adapters; serve needs at least one per persona")
    ws = [float(a.get("weight", 1.0)) for a in entry["adapters"]]
    base = base_model or entry.get("base_model")
    return _spec(_check_name(name, registry), paths, ws, base, entry.get("generation") or {}, allow_pickle)


def resolve_one(name: str, path: str | None, registry: str | None) -> PersonaSpec:
    """A persona to add at run time: the adapter folder at ``path``, else the registry entry ``name``; checked as
    at start (folder, weights, one base per persona). Safetensors only: a client names the files."""
    _check_name(name, "lora_name")
    if path:
        return _spec(name, [path], None, None, {}, False)
    if not registry:
        raise UserError(f"no lora_path for {name!r}, and this server reads no registry; give lora_path")
    return _entry_spec(name, registry_entry(name, registry), registry, None, False)


def registry_names(registry: str) -> list[str]:
    return [str(k) for k in read_registry(registry, instead="--adapters NAME=PATH")]


def _adapters_exist(entry: dict[str, Any]) -> bool:
    return bool(entry.get("adapters")) and all(Path(a["path"]).is_dir() for a in entry["adapters"])


def resolve_specs(
    personas: list[str] | str | None,
    registry: str,
    adapters: list[str] | str | None,
    base_model: str | None,
    allow_pickle: bool,
) -> list[PersonaSpec]:
    """The personas to serve, validated (folders, weights, one shared base, shapes that fit it); loads no weights.

    ``adapters`` (``NAME=PATH`` or ``PATH``) serve those folders; otherwise ``personas`` names registry entries, or
    by default every registry entry whose adapter folders exist.
    """
    specs: list[PersonaSpec] = []
    if adapters:
        for item in parse_list(adapters, "adapters"):
            name, eq, path = item.partition("=")
            if not eq:
                path = name
                folder = read_adapter(path, allow_pickle)
                name = folder.metadata.get("politician") or folder.path.resolve().name
            specs.append(_spec(_check_name(name, "--adapters"), [path], None, base_model, {}, allow_pickle))
    else:
        names = parse_list(personas, "personas") if personas else None
        entries = {n: registry_entry(n, registry) for n in (names or registry_names(registry))}
        if names is None:
            entries = {n: e for n, e in entries.items() if _adapters_exist(e)}
            if not entries:
                raise UserError(
                    f"{registry}: no persona has its adapter folders here yet; train one (politician-lm fit "
                    "--config configs/smollm2-biden.yaml) or pass --adapters NAME=PATH"
                )
        specs += [_entry_spec(n, e, registry, base_model, allow_pickle) for n, e in entries.items()]
    if len({s.name for s in specs}) != len(specs):
        raise UserError("two personas have the same name; give each adapter its own NAME=PATH")
    bases: dict[str, list[str]] = {}
    for s in specs:
        key = next((b for b in bases if same_model(b, s.base_model)), s.base_model)
        bases.setdefault(key, []).append(s.name)
    if len(bases) > 1:
        groups = "; ".join(f"{b}: {', '.join(ns)}" for b, ns in bases.items())
        raise UserError(
            f"the personas use {len(bases)} base models ({groups}); one server holds one base, so choose "
            f"with --personas {','.join(next(iter(bases.values())))}"
        )
    check_fit(
        specs[0].base_model, [read_adapter(path, allow_pickle) for s in specs for path in s.adapters], allow_pickle
    )
    for s in specs:
        s.registry = registry
    return specs
