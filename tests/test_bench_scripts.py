"""The benchmark scripts refuse bad inputs in one line before any run (their full runs take many minutes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line_failure(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def adapter_folder(tmp_path, **meta):
    folder = tmp_path / "adapter"
    folder.mkdir(parents=True)
    (folder / "politician_lm.json").write_text(json.dumps(meta))
    return folder


def test_bench_evaluate_loads_the_adapters_own_base(tmp_path):
    bench = script("bench_evaluate")
    tiny = ROOT / "checkpoints" / "tiny-politician"
    assert bench.base_model(adapter_folder(tmp_path, base_model="checkpoints/tiny-politician"), None) == str(
        tiny.resolve()
    )
    moved = adapter_folder(tmp_path / "m", base_model="models/gone", base_model_path=str(tmp_path / "gone"))
    with pytest.raises(SystemExit, match="pass --base_model"):
        bench.base_model(moved, None)
    assert bench.base_model(moved, "checkpoints/tiny-politician") == str(tiny.resolve())


@pytest.mark.slow  # a subprocess
def test_bench_evaluate_wants_a_prepared_data_folder(tmp_path):
    adapter = adapter_folder(tmp_path, base_model="checkpoints/tiny-politician")
    (tmp_path / "data").mkdir()
    message = one_line_failure(
        ["scripts/bench_evaluate.py", "--adapter", str(adapter), "--data", str(tmp_path / "data")]
    )
    assert "no val.jsonl" in message


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize(
    "args,message",
    [
        (["--repeats", "0"], "--repeats must be 1 or more"),
        (["--eval-every", "0"], "--eval-every must be 1 or more"),
        (["--lora-dropout", "1"], "--lora-dropout must be in [0, 1)"),
    ],
)
def test_bench_vs_trl_refuses_bad_values_first(args, message):
    assert message in one_line_failure(["scripts/bench_vs_trl.py", *args])


@pytest.mark.slow  # a subprocess
@pytest.mark.skipif(importlib.util.find_spec("trl") is not None, reason="TRL is installed here")
def test_bench_vs_trl_wants_trl_before_any_run():
    """Every table compares against TRL: without it the script stops at once, not after the runs of ours."""
    assert "TRL is not installed" in one_line_failure(["scripts/bench_vs_trl.py", "--steps", "2"])
