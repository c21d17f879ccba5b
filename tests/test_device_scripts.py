"""The prepared GPU measurement (scripts/device_wheels.sh, scripts/device_checks.sh) stays in step with the package.

CI has no GPU, so these scripts run only in a session that is lent one; what can be checked here is that the wheels
they carry satisfy pyproject.toml's ranges (a bumped range with a stale pin would fail on the device, in the one
session that has one) and that every step the checks run names a flag the benchmark and the CLI still take.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from tests.helpers import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

WHEELS = ROOT / "scripts" / "device_wheels.sh"
CHECKS = ROOT / "scripts" / "device_checks.sh"


def pinned() -> dict[str, str]:
    return {name.lower(): version for name, version in re.findall(r"([A-Za-z][\w.-]*)==([\w.]+)", WHEELS.read_text())}


def test_every_carried_wheel_satisfies_the_projects_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {
        Requirement(spec).name.lower(): Requirement(spec)
        for spec in project["dependencies"] + project["optional-dependencies"]["bench"]
    }
    pins = pinned()
    for name in ("bitsandbytes", "peft", "trl", "datasets", "jsonargparse", "gguf", "rouge-score"):
        assert name in pins, f"{name} is not carried to the device"
    for name, version in pins.items():
        if name in ranges:
            assert ranges[name].specifier.contains(version), f"{name}=={version} is outside {ranges[name]}"


@pytest.mark.slow  # a subprocess
def test_the_checks_use_flags_that_exist():
    text = CHECKS.read_text()
    bench_help = subprocess.run(
        [sys.executable, "scripts/bench_vs_trl.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for flag in re.findall(r"bench_vs_trl\.py ([^\n\\]*)", text)[-1].split():
        if flag.startswith("--"):
            assert flag in bench_help, f"bench_vs_trl.py has no {flag}"
    assert "configs/biden.yaml" in text and (ROOT / "configs" / "biden.yaml").is_file()
    assert "--trainer.max_time" in text and "--model.model_name_or_path" in text
