"""The prepared GPU measurement (scripts/device_wheels.sh, scripts/device_checks.sh) stays in step with the package.

CI has no GPU, so these scripts run only in a session that is lent one; what can be checked here is that the wheels
they carry satisfy pyproject.toml's ranges (a bumped range with a stale pin would fail on the device, in the one
session that has one) and that every step the checks run names a flag the benchmark and the CLI still take.
"""

from __future__ import annotations

import os
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


@pytest.mark.slow  # a subprocess
def test_unknown_steps_are_refused_before_anything_runs(tmp_path):
    """Every step name is checked first: a typo after a valid step stops the call at once, not minutes in."""
    proc = subprocess.run(
        ["bash", str(CHECKS), "fit", "bogus"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(tmp_path)},
    )
    assert proc.returncode == 2 and "unknown step 'bogus'" in proc.stderr, proc.stderr
    assert "wheels" not in proc.stderr and not list(tmp_path.iterdir())


@pytest.mark.slow  # a short fit
def test_fit_summary_brings_the_throughput_back(tmp_path, tiny_path):
    """The fit step's tokens/s, MFU and peak memory (QLoRAThroughput logs them to the loggers only) reach $OUT: the
    run's metrics.csv is copied there and summed up in one line; and the step starts in a fresh folder each call."""
    from functools import partial

    import lightning.pytorch as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from politician_lm import PoliticianDataModule, PoliticianLM
    from politician_lm.callbacks.throughput import QLoRAThroughput
    from tests.helpers import pc_rows, quiet_trainer, write_jsonl

    L.seed_everything(0)
    run = tmp_path / "run"
    write_jsonl(run / "data" / "train.jsonl", pc_rows(8))
    write_jsonl(run / "data" / "val.jsonl", pc_rows(4))
    dm = PoliticianDataModule(data_path=str(run / "data"), tokenizer=tiny_path, batch_size=2, cache_dir=str(run / "c"))
    model = PoliticianLM(model_name_or_path=tiny_path, optimizer=partial(torch.optim.AdamW, lr=1e-3), lora_dropout=0.0)
    callbacks = [QLoRAThroughput(every_n_steps=1)]
    quiet_trainer(run, 3, callbacks, logger=CSVLogger(run), log_every_n_steps=1).fit(model, datamodule=dm)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "scripts/fit_summary.py", str(run), "--copy-to", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.fullmatch(r"fit: tokens/s \d+ \(\d+-\d+ over \d windows\); MFU .*; peak memory MB \d+;.*\n", proc.stdout)
    assert "perf/tokens_per_s" in (out / "fit-metrics.csv").read_text()
    text = CHECKS.read_text()
    assert "scripts/fit_summary.py /tmp/fit-biden" in text and "rm -rf /tmp/fit-biden" in text
