"""A run folder a researcher can trust: only fit writes adapters, checkpoints hold what their names say, `best`
works as a --ckpt_path, a used folder is never silently replaced, and fit prints no library noise."""

import csv
import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
import yaml
from safetensors.torch import load_file

from politician_lm.cli import main
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

NOISE = (
    "gemm_4bit_forward",
    "pip install kernels",
    "litlogger",
    "tensorboardX",
    "Generating train split",
    "Reading identity.jsonl",
    "Tokenizing train",
    "is_gradient_checkpointing",
    "LeafSpec",
    "Traceback",
)


def fit_args(root, *extra):
    return [
        "fit",
        "--config",
        "configs/demo.yaml",
        "--trainer.default_root_dir",
        str(root),
        "--data.cache_dir",
        str(root.parent / "hf-cache"),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two epochs of the demo (38 steps), validating twice an epoch, every best checkpoint kept."""
    root = tmp_path_factory.mktemp("runs") / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "politician_lm.cli",
            *fit_args(
                root,
                "--trainer.max_epochs",
                "2",
                "--trainer.val_check_interval",
                "0.5",
                "--best_checkpoint.save_top_k",
                "-1",
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc.stdout + proc.stderr


def validations(root, version=0):
    rows = csv.DictReader(open(root / "lightning_logs" / f"version_{version}" / "metrics.csv"))
    return [float(r["val_loss"]) for r in rows if r.get("val_loss")]


def best_checkpoints(root):
    files = sorted((root / "checkpoints").glob("step*.ckpt"), key=lambda p: int(p.stem[4:]))
    return [(f, torch.load(f, map_location="cpu", weights_only=False)) for f in files]


def recorded_score(ckpt):
    (state,) = [
        v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint") and v["monitor"] == "val_loss"
    ]
    return float(state["current_score"])


def adapter_state(root):
    return {
        name: (
            (root / "adapters" / name / "adapter_model.safetensors").read_bytes(),
            (root / "adapters" / name / "politician_lm.json").read_text(),
        )
        for name in ("best", "last")
    }


def test_fit_prints_no_library_noise(run):
    _, output = run
    assert not [n for n in NOISE if n in output], output[-3000:]


def test_last_checkpoint_holds_the_final_step(run):
    root, _ = run
    last = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    meta = json.loads((root / "adapters" / "last" / "politician_lm.json").read_text())
    assert last["global_step"] == meta["global_step"] == 38  # not 35, the last multiple of every_n_train_steps
    assert sorted(p.name for p in (root / "checkpoints").iterdir() if not p.name.startswith("step")) == ["last.ckpt"]


def test_best_checkpoints_are_named_after_the_weights_whose_score_they_record(run):
    root, _ = run
    saved = best_checkpoints(root)
    vals = validations(root)
    assert len(saved) == len(vals) == 4
    for (path, ckpt), val_loss in zip(saved, vals):
        assert int(path.stem[4:]) == ckpt["global_step"], path.name
        assert recorded_score(ckpt) == pytest.approx(val_loss, abs=1e-6), path.name
    # the weights behind the names: the best export is the best-scoring checkpoint, the final one is last.ckpt
    best_meta = json.loads((root / "adapters" / "best" / "politician_lm.json").read_text())
    path, ckpt = min(saved, key=lambda pc: recorded_score(pc[1]))
    assert best_meta["global_step"] == ckpt["global_step"] and best_meta["best_score"] == pytest.approx(
        recorded_score(ckpt)
    )
    assert_same_weights(ckpt, root / "adapters" / "best")
    assert_same_weights(torch.load(root / "checkpoints" / "last.ckpt", weights_only=False), root / "adapters" / "last")


def assert_same_weights(ckpt, adapter_dir):
    exported = load_file(adapter_dir / "adapter_model.safetensors")
    lora = {k: v for k, v in ckpt["state_dict"].items() if "lora_" in k}
    assert len(lora) == len(exported)
    for key, tensor in exported.items():
        (match,) = [v for k, v in lora.items() if k.endswith(key.replace(".weight", ".default.weight"))]
        assert torch.equal(match, tensor), key


def test_validate_test_and_predict_never_write_adapters(run, capsys, chdir_root):
    root, _ = run
    before = adapter_state(root)
    worst = max(best_checkpoints(root), key=lambda pc: recorded_score(pc[1]))[0]
    main(
        [
            "validate",
            "--config",
            "configs/demo.yaml",
            "--trainer.default_root_dir",
            str(root),
            "--data.cache_dir",
            str(root.parent / "hf-cache"),
            "--ckpt_path",
            str(worst),
        ]
    )
    main(
        [
            "predict",
            "--config",
            "configs/demo.yaml",
            "--trainer.default_root_dir",
            str(root),
            "--data.cache_dir",
            str(root.parent / "hf-cache"),
            "--ckpt_path",
            "last",
            "--model.max_new_tokens",
            "4",
        ]
    )
    assert adapter_state(root) == before


def test_ckpt_path_best_is_the_best_checkpoint(run, capsys, chdir_root):
    root, _ = run
    best = min(best_checkpoints(root), key=lambda pc: recorded_score(pc[1]))
    main(
        [
            "validate",
            "--config",
            "configs/demo.yaml",
            "--trainer.default_root_dir",
            str(root),
            "--data.cache_dir",
            str(root.parent / "hf-cache"),
            "--ckpt_path",
            "best",
        ]
    )
    versions = sorted((root / "lightning_logs").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    (val_loss,) = [
        float(r["val_loss"]) for r in csv.DictReader(open(versions[-1] / "metrics.csv")) if r.get("val_loss")
    ]
    assert val_loss == pytest.approx(recorded_score(best[1]), abs=1e-5)


def test_ckpt_path_best_without_a_best_checkpoint_is_one_line(tmp_path, capsys, chdir_root):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "validate",
                "--config",
                "configs/demo.yaml",
                "--trainer.default_root_dir",
                str(tmp_path / "none"),
                "--ckpt_path",
                "best",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("politician-lm: error:") and "no best checkpoint" in err
    assert len(err.splitlines()) == 1


def test_a_second_fit_into_a_used_folder_is_refused_before_any_model_loads(run, capsys, chdir_root):
    root, _ = run
    versions = sorted(p.name for p in (root / "lightning_logs").iterdir())
    with pytest.raises(SystemExit) as exc:
        main(fit_args(root))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert "already holds a run" in err and "--ckpt_path last" in err and "--overwrite true" in err
    assert sorted(p.name for p in (root / "lightning_logs").iterdir()) == versions  # nothing started


def test_overwrite_refuses_to_delete_the_fits_own_inputs_and_a_file_as_the_run_folder(
    run, tmp_path, capsys, chdir_root
):
    """--overwrite removed adapters/ before the fit read its --model.init_adapter from there, then failed after the
    model loaded; a file as the run folder ended in a traceback after the model loaded (both found by a hunt)."""
    root = tmp_path / "inputs"
    shutil.copytree(run[0], root)
    for flag, value in (("--model.init_adapter", root / "adapters" / "last"), ("--data.data_path", root / "adapters")):
        with pytest.raises(SystemExit) as exc:
            main(fit_args(root, "--overwrite", "true", flag, str(value)))
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and len(err.splitlines()) == 1, err
        assert f"{value}: --overwrite true would delete this input, which the run folder {root} holds" in err
        assert (root / "adapters" / "last" / "adapter_config.json").is_file()
    (tmp_path / "afile").write_text("a file, not a run folder\n")
    with pytest.raises(SystemExit) as exc:
        main(fit_args(tmp_path / "afile"))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.endswith(
        "is a file, and --trainer.default_root_dir names the run folder; choose another"
    )


def test_overwrite_replaces_the_run_and_leaves_no_versioned_duplicates(run, tmp_path, chdir_root):
    root = tmp_path / "copy"
    shutil.copytree(run[0], root)
    (root / "side_by_side.jsonl").write_text('{"prompt": "the old run\'s table"}\n')  # as SideBySide writes it
    main(
        fit_args(
            root,
            "--overwrite",
            "true",
            "--trainer.max_steps",
            "3",
            "--trainer.limit_val_batches",
            "0",
            "--trainer.num_sanity_val_steps",
            "0",
            "--trainer.callbacks",
            "[]",
        )
    )
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["last.ckpt"]  # no last-v1, no old step*.ckpt
    assert sorted(p.name for p in (root / "adapters").iterdir()) == ["last"]  # the old best is gone with its run
    assert not (root / "side_by_side.jsonl").exists()  # the old run's table went with it
    assert json.loads((root / "adapters" / "last" / "politician_lm.json").read_text())["global_step"] == 3
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3


def test_resuming_with_another_lora_rank_is_one_line(run, capsys, chdir_root):
    root, _ = run
    with pytest.raises(SystemExit) as exc:
        main(fit_args(root, "--ckpt_path", "last", "--model.lora_r", "16", "--trainer.max_epochs", "3"))
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("politician-lm")]
    assert exc.value.code == 2 and len(lines) == 1
    assert "model.lora_r 8" in lines[0] and "model.lora_r 16" in lines[0]


@pytest.mark.parametrize(
    "changed,message",
    [
        (
            ["--data.data_path", "data/trump", "--data.politician", "trump"],
            "data.data_path 'data/biden', not 'data/trump'",
        ),
        (["--data.politician", "trump"], "data.politician 'biden', not 'trump'"),
    ],
)
def test_resuming_on_other_data_or_for_another_politician_is_one_line(run, capsys, chdir_root, changed, message):
    """A Biden run resumed with Trump's data went on as Trump and kept Biden's best adapter and best score."""
    root, _ = run
    before = sorted(p.name for p in root.rglob("*"))
    with pytest.raises(SystemExit) as exc:
        main(fit_args(root, "--ckpt_path", "last", "--trainer.max_epochs", "3", *changed))
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("politician-lm")]
    assert exc.value.code == 2 and len(lines) == 1 and message in lines[0], lines
    assert sorted(p.name for p in root.rglob("*")) == before


def test_fit_without_default_root_dir_writes_under_runs(tmp_path, chdir_root):
    from politician_lm.training import run_trainer_cli

    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    del config["trainer"]["default_root_dir"]
    path = tmp_path / "no-root.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run_trainer_cli(["--config", str(path), "--data.cache_dir", str(tmp_path / "c")], run=False)
    assert cli.trainer.default_root_dir == "runs/biden"
    assert {cb.dirpath for cb in cli.trainer.checkpoint_callbacks} == {"runs/biden/checkpoints"}


def test_the_cli_does_not_repeat_lightnings_args_warning(tmp_path, chdir_root):
    """stages builds every stage's CLI from Python while sys.argv holds `politician-lm stages ...`."""
    from politician_lm.training import run_trainer_cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_trainer_cli(
            [
                "--config",
                "configs/demo.yaml",
                "--trainer.default_root_dir",
                str(tmp_path),
                "--data.cache_dir",
                str(tmp_path / "c"),
            ],
            run=False,
        )
    assert not [w for w in caught if "args parameter is intended" in str(w.message)]
