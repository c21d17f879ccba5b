"""``evaluate``'s inputs refused in one line before any model loads: adapters whose training did not hold out the
documents scored as held out, a preference stage's pairs taken for held-out data, and settings that cannot work."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from politician_lm.cli import main
from tests.helpers import ROOT, quill_speech, write_jsonl


def _cli(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "politician_lm.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def quill(tmp_path_factory):
    """Quill's five addresses prepared twice (address-4.txt held out, and nothing held out), a profile, and a short
    real fit on the folder that held nothing out."""
    root = tmp_path_factory.mktemp("quill")
    speeches, profiles = root / "speeches", root / "profiles"
    speeches.mkdir(), profiles.mkdir()
    for i in range(5):
        (speeches / f"address-{i}.txt").write_text(quill_speech(i), "utf-8")
    (profiles / "quill.yaml").write_text('name: Maren Quill\nsystem_prompt: "You are Governor Maren Quill."\n')
    (root / "who.jsonl").write_text('{"prompt": "Who are you?", "kind": "identity"}\n')
    for name, held in (("held", "address-4.txt"), ("none", "")):
        _cli("prepare", "--transcripts", str(speeches), "--tokenizer", "checkpoints/tiny-politician",
             "--output_dir", str(root / name), "--heldout_documents", held, "--near_dup_threshold", "1",
             "--cluster_threshold", "1")  # fmt: skip
    _cli("fit", "--config", "configs/demo.yaml", "--data.data_path", str(root / "none"), "--trainer.default_root_dir",
         str(root / "fit"), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
         "--trainer.enable_progress_bar", "false", "--data.politician", "quill", "--data.profiles_dir", str(profiles),
         "--trainer.callbacks", "[]")  # fmt: skip
    return root


def copy_adapter(quill, name: str, data_path, split=None, init_adapter=None):
    """The fit's adapter copied to ``name``, its records saying it was trained on ``data_path`` (with ``split``, from
    ``init_adapter``): what a fit on that data would have written beside the same weights."""
    folder = quill / name
    shutil.copytree(quill / "fit" / "adapters" / "last", folder)
    meta = json.loads((folder / "politician_lm.json").read_text())
    meta.pop("split", None)
    (folder / "politician_lm.json").write_text(json.dumps(meta | ({"split": split} if split else {})))
    cfg = yaml.safe_load((folder / "training_config.yaml").read_text())
    cfg["data"]["data_path"], cfg["model"]["init_adapter"] = str(data_path), init_adapter
    (folder / "training_config.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def refused(capsys, quill, *args: str) -> str:
    """evaluate's one-line error for ``args``, checked to leave no output behind."""
    out = Path(tempfile.mkdtemp(dir=quill)) / "eval"
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--output_dir", str(out), "--politician", "quill", "--profiles_dir",
              str(quill / "profiles"), "--stances", "none", "--identity_probes", str(quill / "who.jsonl"),
              *args])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and not out.exists(), err
    return err


@pytest.mark.slow  # the fit takes seconds
def test_an_adapter_whose_data_did_not_hold_out_the_scored_documents_is_refused(quill, capsys):
    bad = str(quill / "fit" / "adapters" / "last")
    err = refused(capsys, quill, "--adapters", bad, "--data_path", str(quill / "held"))
    assert f"{bad} was trained on data that did not hold out ['address-4.txt']" in err
    # a second adapter is checked as well as the first
    split = json.loads((quill / "held" / "stats.json").read_text())["split"]
    good = copy_adapter(quill, "good", quill / "held", split)
    err = refused(capsys, quill, "--adapters", f"{good},{bad}", "--data_path", str(quill / "held"))
    assert f"{bad} was trained on data that did not hold out ['address-4.txt']" in err
    # an adapter trained with another held-out document: not "prepare again"
    other = copy_adapter(quill, "other", quill / "held", {**split, "heldout_documents": ["address-3.txt"]})
    err = refused(capsys, quill, "--adapters", str(other), "--data_path", str(quill / "held"))
    assert f"{other} was trained on data that did not hold out ['address-4.txt']" in err


@pytest.mark.slow
def test_a_folder_without_test_jsonl_is_named_as_such(quill, capsys):
    shutil.copytree(quill / "held", quill / "no-test")
    (quill / "no-test" / "test.jsonl").unlink()
    split = json.loads((quill / "held" / "stats.json").read_text())["split"]
    good = copy_adapter(quill, "good-2", quill / "held", split)
    err = refused(capsys, quill, "--adapters", str(good), "--data_path", str(quill / "no-test"))
    assert "has no test.jsonl" in err and "prepare again" not in err


@pytest.mark.slow
def test_a_preference_stage_is_scored_on_its_sft_data_not_on_its_pairs(quill, capsys):
    from politician_lm.evaluation.lineage import lineage

    pairs = quill / "pairs"
    rows = [json.loads(line) for line in (quill / "held" / "train.jsonl").read_text().splitlines()]
    write_jsonl(pairs / "train.jsonl", [{"prompt": r["prompt"], "chosen": r["completion"],
                                        "rejected": "No."} for r in rows])  # fmt: skip
    sft = copy_adapter(quill, "sft", quill / "held", json.loads((quill / "held" / "stats.json").read_text())["split"])
    dpo = copy_adapter(quill, "dpo", pairs, init_adapter=str(sft))
    assert lineage(dpo).data["data_path"] == str(quill / "held")  # the default --data_path: the SFT data
    assert lineage(dpo).paths == [str(pairs), str(quill / "held")]
    orphan = copy_adapter(quill, "orphan", pairs)  # no init_adapter to follow
    err = refused(capsys, quill, "--adapters", str(orphan))
    assert f"trained on the preference pairs {pairs}" in err and "pass --data_path <the SFT data>" in err
    # the pairs given as --data_path: refused, naming the SFT data the stage's lineage reaches
    err = refused(capsys, quill, "--adapters", str(dpo), "--data_path", str(pairs))
    assert f"--data_path {pairs} holds preference pairs" in err and f"(for {dpo}: {quill / 'held'})" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--batch_size", "0", "--batch_size must be at least 1, got 0"),
        ("--loss_batch_size", "-1", "--loss_batch_size must be at least 1, got -1"),
        ("--n_boot", "0", "--n_boot must be at least 1, got 0"),
        ("--num_prompts", "0", "--num_prompts must be at least 1"),
        ("--max_new_tokens", "0", "--max_new_tokens must be at least 1"),
        ("--generic_prompts", "0", "--generic_prompts must be at least 1"),
        ("--memorization_words", "0", "--memorization_words must be at least 1"),
        ("--val_fraction", "1.5", "--val_fraction must be between 0 and 1"),
        ("--identity_probes", "nowhere/probes.jsonl", "--identity_probes nowhere/probes.jsonl: file not found"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_loading(quill, capsys, flag, value, message):
    split = json.loads((quill / "held" / "stats.json").read_text())["split"]
    adapter = quill / f"good-{flag[2:]}-{value}".replace("/", "_")  # trained on the folder evaluated, as fit writes
    copy_adapter(quill, adapter.name, quill / "held", split)
    err = refused(capsys, quill, "--adapters", str(adapter), "--num_prompts", "2",
                  "--max_new_tokens", "2", "--generic_prompts", "2", "--max_heldout", "2", flag, value)  # fmt: skip
    assert message in err


@pytest.mark.slow
def test_a_style_data_dir_without_politician_folders_is_refused_not_a_judge_without_generic(quill, capsys):
    split = json.loads((quill / "held" / "stats.json").read_text())["split"]
    good = copy_adapter(quill, "good-3", quill / "held", split)
    (quill / "empty").mkdir()
    err = refused(capsys, quill, "--adapters", str(good), "--judge", "sotu", "--style_data_dir", str(quill / "empty"),
                  "--num_prompts", "2", "--max_new_tokens", "2", "--max_heldout", "2", "--n_boot", "10")  # fmt: skip
    assert f"--style_data_dir {quill / 'empty'}: no <politician>/*.jsonl" in err


@pytest.mark.slow
def test_an_adapter_named_twice_is_refused(quill, capsys):
    split = json.loads((quill / "held" / "stats.json").read_text())["split"]
    good = copy_adapter(quill, "good-twice", quill / "held", split)
    err = refused(capsys, quill, "--adapters", f"{good},{good}/")
    assert f"name {good} twice" in err


@pytest.fixture
def no_model(monkeypatch):
    """``load_persona`` fails the test: the refusals below come before any model loads (they once came after it)."""
    import politician_lm.inference

    def loaded(*args, **kwargs):
        raise AssertionError("loaded")

    monkeypatch.setattr(politician_lm.inference, "load_persona", loaded)


def quill_adapter(quill, name: str, config: dict | None = None, metadata: dict | None = None) -> Path:
    """A copy of the fit's adapter trained on the folder evaluated, with ``config`` and ``metadata`` keys replaced."""
    folder = copy_adapter(quill, name, quill / "held", json.loads((quill / "held" / "stats.json").read_text())["split"])
    for file, changes in (("adapter_config.json", config), ("politician_lm.json", metadata)):
        (folder / file).write_text(json.dumps(json.loads((folder / file).read_text()) | (changes or {})))
    return folder


@pytest.mark.slow
def test_a_base_model_that_cannot_take_the_adapters_is_refused_before_loading(quill, capsys, no_model):
    from safetensors.numpy import save_file

    good = quill_adapter(quill, "good-base")
    err = refused(capsys, quill, "--adapters", str(good), "--base_model", str(quill / "nobase"))
    assert f"{quill / 'nobase'}: base model folder does not exist" in err
    other = quill_adapter(quill, "other-base", {"base_model_name_or_path": "someone/else"}, {"base_model": "x"})
    err = refused(capsys, quill, "--adapters", f"{good},{other}")
    assert f"{other}: trained on base model 'someone/else', but {good} on" in err
    gone = quill_adapter(quill, "gone-base", {"base_model_name_or_path": "gone/base"},
                         {"base_model": "gone/base", "base_model_path": str(quill / "gone")})  # fmt: skip
    err = refused(capsys, quill, "--adapters", str(gone))
    assert f"its base model folder {quill / 'gone'} is gone" in err
    small = quill / "small-base"  # a base whose layer is not the adapter's size
    small.mkdir()
    (small / "config.json").write_text("{}")
    save_file({"model.layers.0.mlp.down_proj.weight": np.zeros((3, 3), np.float32)}, str(small / "model.safetensors"))
    err = refused(capsys, quill, "--adapters", str(good), "--base_model", str(small))
    assert "the adapter belongs to another base model" in err


@pytest.mark.slow
def test_a_records_judge_it_could_not_train_is_refused_before_loading(quill, capsys, no_model):
    good = quill_adapter(quill, "good-judge")
    style = quill / "style-one"
    (style / "quill").mkdir(parents=True)
    shutil.copy(quill / "held" / "train.jsonl", style / "quill" / "train.jsonl")
    err = refused(capsys, quill, "--adapters", str(good), "--judge", "records", "--style_data_dir", str(style))
    assert f"{style}: found data for ['quill']; the style classifier needs at least 2 politicians" in err
    (style / "other").mkdir()
    (style / "other" / "empty.jsonl").write_text("")
    err = refused(capsys, quill, "--adapters", str(good), "--judge", "records", "--style_data_dir", str(style))
    assert f"{style / 'other' / 'empty.jsonl'}: file is empty" in err


@pytest.mark.slow
def test_another_politicians_adapter_without_a_usable_profile_is_refused_before_loading(quill, capsys, no_model):
    good, other = quill_adapter(quill, "good-target"), quill_adapter(quill, "orla", metadata={"politician": "orla"})
    err = refused(capsys, quill, "--adapters", f"{good},{other}")  # scored on identity against orla's profile
    assert "unknown politician 'orla'; use one of: quill" in err
    profiles = quill / "profiles-orla"  # orla's profile there, with a stance that lacks its topic
    shutil.copytree(quill / "profiles", profiles)
    (profiles / "orla.yaml").write_text("name: Orla Finch\nstances: [{id: tax, position: support}]\n")
    with pytest.raises(SystemExit) as exc:  # quill's profile has no stances: a note first, then the refusal
        main(["evaluate", "--output_dir", str(quill / "eval-orla"), "--politician", "quill", "--profiles_dir",
              str(profiles), "--identity_probes", "none", "--adapters", f"{good},{other}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and f"{profiles}/orla.yaml" in err[-1], err
    assert "missing field 'topic'" in err[-1] and not (quill / "eval-orla").exists()
    # one id in both profiles over two statements: opposite_sides would compare two questions as one
    tax = "{{id: tax, topic: tax, statement: {}, position: support, argument: Yes.}}"
    (profiles / "orla.yaml").write_text(f"name: Orla Finch\nstances: [{tax.format('a flat tax')}]\n")
    quill_yaml = profiles / "quill.yaml"
    quill_yaml.write_text(quill_yaml.read_text() + f"\nstances: [{tax.format('a wealth tax')}]\n")
    err = refused(capsys, quill, "--adapters", f"{good},{other}", "--profiles_dir", str(profiles), "--stances", "all")
    assert "stance 'tax' is 'a wealth tax' in quill's profile but 'a flat tax' in orla's" in err


def test_adapters_whose_short_names_are_equal_are_told_apart_in_the_table():
    from politician_lm.evaluation.card import short_namer

    a, b = "runs/a/fit-biden/adapters/last", "runs/b/fit-biden/adapters/last"
    short = short_namer(["base", "prompt-only", a, b, "runs/x/adapters/best"])
    assert short(a) == "a/fit-biden/last" and short(b) == "b/fit-biden/last"
    assert short("runs/x/adapters/best") == "x/best" and short(f"{b} - {a}") == "b/fit-biden/last - a/fit-biden/last"


@pytest.mark.slow
def test_inputs_inside_the_output_folder_a_log_that_is_no_log_and_probes_beside_a_prompts_file_are_refused(
    quill, capsys, no_model
):
    good = quill_adapter(quill, "good-inputs")
    out = quill / "eval-holds-prompts"
    out.mkdir()
    prompts = out / "mine.jsonl"
    prompts.write_text('{"prompt": "Who are you?", "kind": "identity"}\n')
    with pytest.raises(SystemExit):  # --overwrite true replaced the folder, the user's prompts file with it
        main(["evaluate", "--adapters", str(good), "--output_dir", str(out), "--overwrite", "true", "--politician",
              "quill", "--profiles_dir", str(quill / "profiles"), "--stances", "none", "--prompts_file",
              str(prompts)])  # fmt: skip
    assert "holds the input" in capsys.readouterr().err and prompts.is_file()

    log = quill / "hparams.yaml"
    log.write_text("anchor_kind: hinge\nbeta: 0.1\n")
    assert "not a Lightning metrics.csv" in refused(capsys, quill, "--adapters", str(good), "--logs", str(log))
    err = refused(capsys, quill, "--adapters", str(good), "--prompts_file", str(prompts))  # with who.jsonl as probes
    assert "is not read with --prompts_file" in err
