"""Per-politician profiles (``data/profiles/<name>.yaml``): name, biography facts and the persona system prompt.

``load_profile`` takes a plain name (what configs and commands name); ``load_profile_spec`` also takes a path to a
YAML file, as ``prepare --identity_profile`` does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from politician_lm.artifacts.jsonl import read_utf8
from politician_lm.errors import UserError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def available(profiles_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def load_profile(politician: str, profiles_dir: str | Path = "data/profiles") -> dict[str, Any]:
    """Load the profile for ``politician``; the name must be a plain slug, so it can never escape ``profiles_dir``."""
    known = available(profiles_dir)
    if not _NAME.match(politician) or politician not in known:
        if not known:
            raise UserError(
                f"unknown politician {politician!r}: no profiles in {Path(profiles_dir).resolve()}; run from the "
                "repository, or pass --profiles_dir (or --data.profiles_dir) the folder of <name>.yaml profiles"
            )
        raise UserError(
            f"unknown politician {politician!r}; use one of: {', '.join(known)} (profiles live in "
            f"{profiles_dir}/<name>.yaml, a lower-case name; for a new politician write one with at least a name and "
            "a system_prompt, as the others have)"
        )
    path = Path(profiles_dir) / f"{politician}.yaml"
    try:
        profile = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable YAML profile ({type(e).__name__})") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("name"), str):
        raise UserError(f"{path}: a profile needs at least a 'name' string")
    return profile


def profile_file(spec: str, profiles_dir: str | Path = "data/profiles") -> Path:
    """The YAML file of a profile given as a path, or as a name under ``profiles_dir``; a UserError if none."""
    path = Path(spec)
    if not path.is_file() and _NAME.fullmatch(spec):
        path = Path(profiles_dir) / f"{spec}.yaml"
    if not path.is_file():
        raise UserError(f"{spec}: no such profile; pass a YAML path such as {Path(profiles_dir) / 'biden.yaml'}")
    return path


def load_profile_spec(spec: str, profiles_dir: str | Path = "data/profiles") -> dict[str, Any]:
    """A profile given as a path to a YAML file, or as a name under ``profiles_dir``
    (``prepare --identity_profile``)."""
    path = profile_file(spec, profiles_dir)
    try:
        profile = yaml.safe_load(read_utf8(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not a readable YAML profile") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("name"), str):
        raise UserError(f"{path}: a profile needs at least a 'name' string")
    return profile


def prepared_for(data_path: str | Path, profiles_dir: str | Path = "data/profiles") -> dict[str, str]:
    """``{prepare option: politician}`` for the profiles a prepared folder was made from: the profile file names
    ``prepare`` recorded in ``stats.json`` (``pairs.json`` in a pairs folder) under ``profiles``; for a folder
    prepared before that, its ``identity_profile`` and ``stances`` settings resolved under ``profiles_dir``."""
    import json

    for name in ("stats.json", "pairs.json"):
        try:
            stats = json.loads((Path(data_path) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # none, or broken: another reader names the broken file
        if isinstance(stats.get("profiles"), dict):
            return {str(k): str(v) for k, v in stats["profiles"].items()}
        settings = stats.get("settings") or {}
        found = {}
        for key, spec in ((k, settings.get(k)) for k in ("identity_profile", "stances")):
            try:
                found[key] = profile_file(spec, profiles_dir).stem if isinstance(spec, str) else None
            except UserError:
                continue  # moved or deleted since: nothing to compare with
        return {k: v for k, v in found.items() if v}
    return {}


def check_prepared_for(
    paths: list[str | Path | None], politician: str | None, profiles_dir: str | Path, flag: str = "--data.politician"
) -> None:
    """A one-line UserError when one of ``paths`` (data, anchor) was prepared from another politician's profile than
    ``politician``: its identity and stance records would train, and every metric judge, the wrong persona."""
    for data_path in [p for p in paths if p] if politician else ():
        for key, name in prepared_for(data_path, profiles_dir).items():
            if name == politician:
                continue
            raise UserError(
                f"{data_path} was prepared for {name!r} (prepare --{key}), but {flag} is {politician!r}: pass "
                f"{flag} {name} (and {flag.replace('politician', 'profiles_dir')} where its profile is), or prepare "
                "it again"
            )
