"""The floors CI tests (.ci/floors.txt) are the floors pyproject.toml declares, dependency for dependency."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def declared_floors() -> dict[str, str]:
    """``name -> floor`` of every runtime dependency with a ``>=`` bound, torch aside (setup pins its CPU build)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for spec in deps:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)", spec)
        assert match, f"{spec!r} has no floor: every dependency needs one for the floors lane"
        if match.group(1) != "torch":
            out[match.group(1).lower()] = match.group(2)
    return out


def ci_floors() -> dict[str, str]:
    lines = (ROOT / ".ci" / "floors.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip().lower(): version.strip() for name, version in pairs}


def test_ci_installs_every_declared_floor() -> None:
    assert ci_floors() == declared_floors()
