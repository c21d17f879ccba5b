"""End to end through the real CLI on the tiny model: the demo fit, its outputs, and kill -9 + resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def fit_cmd(root, *extra):
    return [
        sys.executable,
        "-m",
        "politician_lm.cli",
        "fit",
        "--config",
        "configs/demo.yaml",
        "--trainer.default_root_dir",
        str(root),
        "--data.cache_dir",
        str(root / "hf-cache"),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def val_losses(root):
    rows = list(csv.DictReader(open(root / "lightning_logs" / "version_0" / "metrics.csv")))
    start = [float(r["val_loss_at_start"]) for r in rows if r.get("val_loss_at_start")]
    vals = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    return start, vals


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(fit_cmd(root), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_demo_fit_lowers_validation_loss(demo_run):
    root, _ = demo_run
    start, vals = val_losses(root)
    print(f"val_loss at start {start[0]:.4f}; during fit {[round(v, 4) for v in vals]}")
    assert len(start) == 1 and len(vals) >= 4
    assert vals[-1] < start[0] - 0.05
    assert min(vals) < start[0]


def test_demo_fit_leaves_the_documented_layout(demo_run):
    root, _ = demo_run
    for name in ("best", "last"):
        folder = root / "adapters" / name
        for f in (
            "adapter_config.json",
            "adapter_model.safetensors",
            "tokenizer.json",
            "politician_lm.json",
            "training_config.yaml",
        ):
            assert (folder / f).is_file(), folder / f
    meta = json.loads((root / "adapters" / "last" / "politician_lm.json").read_text())
    assert meta["politician"] == "biden" and meta["quantization"] == "nf4"
    best = json.loads((root / "adapters" / "best" / "politician_lm.json").read_text())
    _, vals = val_losses(root)
    assert best["best_score"] == pytest.approx(min(vals), abs=1e-6)
    # one validation per epoch: best names the epoch (from 0) of its weights, and last the final one, the same way
    assert best["epoch"] == vals.index(min(vals)) and meta["epoch"] == len(vals) - 1 == 3, (best, meta)
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert (root / "lightning_logs" / "version_0" / "config.yaml").is_file()


def test_fit_killed_with_sigkill_resumes_from_last_checkpoint(demo_run, tmp_path):
    root = tmp_path / "run"
    proc = subprocess.Popen(fit_cmd(root), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = root / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / "adapters" / "last").exists()  # killed before the end of fit

    resumed = subprocess.run(
        fit_cmd(root, "--ckpt_path", "last"), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    meta = json.loads((root / "adapters" / "last" / "politician_lm.json").read_text())
    full = json.loads((demo_run[0] / "adapters" / "last" / "politician_lm.json").read_text())
    assert meta["global_step"] == full["global_step"] and meta["epoch"] == full["epoch"]


def test_fit_stopped_by_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    """Lightning ends an interrupted fit with exit(1); the CLI answers as for any Ctrl-C: 130 and one line."""
    root = tmp_path / "run"
    proc = subprocess.Popen(fit_cmd(root), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (root / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "politician-lm: interrupted", lines[-3:]
    assert lines[-2].startswith("fit stopped at step ") and "--ckpt_path last" in lines[-2], lines[-3:]
    assert "Traceback" not in err
    assert (root / "lightning_logs" / "version_0" / "metrics.csv").is_file()
