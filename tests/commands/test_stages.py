"""stages: three stages end to end on the tiny model, chained adapters, skipping on re-run, separate + merge."""

import json

import pytest
import yaml

from politician_lm.cli import main
from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def write_config(path, root, mode="continue", epochs=(1, 1, 1), **extra):
    cfg = {
        "base_config": str(ROOT / "configs" / "demo.yaml"),
        "root_dir": str(root),
        "mode": mode,
        "stages": [
            {
                "name": n,
                "kinds": [n],
                "overrides": {
                    "trainer.max_epochs": e,
                    "trainer.enable_progress_bar": False,
                    "data.cache_dir": str(root.parent / "hf-cache"),
                },
            }
            for n, e in zip(("style", "policy", "identity"), epochs)
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_three_stages_chain_export_and_skip_on_rerun(tmp_path, capsys, chdir_root):
    root = tmp_path / "stages"
    config = write_config(tmp_path / "stages.yaml", root)
    main(["stages", "--config", str(config)])
    summary = json.loads((root / "stages.json").read_text())
    folders = [root / "01-style", root / "02-policy", root / "03-identity"]
    for folder in folders:
        assert (folder / "adapters" / "best" / "adapter_model.safetensors").is_file()
    assert [s["init_adapter"] for s in summary["stages"]] == [
        None,
        str(folders[0] / "adapters/best"),
        str(folders[1] / "adapters/best"),
    ]
    assert all("val_loss" in s["metrics"] and "persona/style_attribution" in s["metrics"] for s in summary["stages"])
    stamps = [(f / "stage.json").stat().st_mtime_ns for f in folders]
    capsys.readouterr()

    main(["stages", "--config", str(config)])
    assert capsys.readouterr().out.count("finished before, skipped") == 3
    assert [(f / "stage.json").stat().st_mtime_ns for f in folders] == stamps

    write_config(config, root, epochs=(1, 2, 1))  # policy changed: policy and identity re-run, style is kept
    main(["stages", "--config", str(config)])
    out = capsys.readouterr().out
    assert "stage style: finished before, skipped" in out and out.count("training on kinds") == 2
    assert (folders[0] / "stage.json").stat().st_mtime_ns == stamps[0]
    assert (root.parent / "hf-cache").is_dir()  # a string override arrives as the plain path


def test_separate_stages_are_merged_with_weights(tmp_path, chdir_root):
    root = tmp_path / "sep"
    config = write_config(tmp_path / "sep.yaml", root, mode="separate", merge_weights=[0.5, 0.3, 0.2])
    main(["stages", "--config", str(config)])
    meta = json.loads((root / "merged" / "politician_lm.json").read_text())
    assert [m["weight"] for m in meta["merged_from"]] == [0.5, 0.3, 0.2]
    summary = json.loads((root / "stages.json").read_text())
    assert summary["final_adapter"] == str(root / "merged") and all(
        s["init_adapter"] is None for s in summary["stages"]
    )


def test_bad_stage_configs_fail_before_training(tmp_path, capsys, chdir_root):
    root = tmp_path / "bad"
    config = write_config(tmp_path / "bad.yaml", root, mode="separate")  # no merge_weights
    with pytest.raises(SystemExit) as exc:
        main(["stages", "--config", str(config)])
    assert exc.value.code == 2 and "merge_weights" in capsys.readouterr().err and not root.exists()
    cfg = yaml.safe_load(config.read_text())
    cfg["mode"] = "continue"
    cfg["stages"][1]["overrides"]["model.lora_rank"] = 8  # a typo in a later stage
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["stages", "--config", str(config)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "stage policy: " in err and "lora_rank" in err and not root.exists()
    del cfg["stages"][1]["overrides"]["model.lora_rank"]
    cfg["stages"][2]["kinds"] = ["identiy"]  # a kind the data does not hold, in the last stage
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["stages", "--config", str(config)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "stage identity: " in err and "no records of kind ['identiy']" in err, err
    assert "identity, policy, style" in err
    assert not root.exists()  # refused before the first stage trained


def test_a_stage_is_a_typed_fit_config_checked_without_the_command_line(tmp_path):
    from politician_lm.commands.stages import Stage, _fit_config
    from politician_lm.errors import UserError
    from politician_lm.training import FitConfig, check

    config = _fit_config(
        Stage("style", kinds=["style"], overrides={"trainer.max_steps": 2}), 0, "configs/demo.yaml", tmp_path
    )
    assert config == FitConfig(
        configs=["configs/demo.yaml"],
        overrides={
            "trainer.default_root_dir": str(tmp_path / "01-style"),
            "data.kinds": ["style"],
            "trainer.max_steps": 2,
        },
    )
    cli = check(config)  # parsed and built, nothing trained
    assert cli.datamodule.hparams.kinds == ["style"] and cli.trainer.max_steps == 2
    with pytest.raises(UserError, match="max_stepz"):
        check(FitConfig(configs=["configs/demo.yaml"], overrides={"trainer.max_stepz": 2}))
    with pytest.raises(UserError, match="lora_r"):
        check(FitConfig(configs=["configs/demo.yaml"], overrides={"model.lora_r": "eight"}))


def test_a_stage_runs_again_when_its_data_changed_and_one_without_its_adapter_is_refused(tmp_path, capsys, chdir_root):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "biden", data)
    root = tmp_path / "stages"
    config = write_config(tmp_path / "one.yaml", root)
    cfg = yaml.safe_load(config.read_text())
    cfg["stages"] = cfg["stages"][1:2]  # policy only
    cfg["stages"][0]["overrides"]["data.data_path"] = str(data)
    config.write_text(yaml.safe_dump(cfg))
    main(["stages", "--config", str(config)])
    main(["stages", "--config", str(config)])
    assert capsys.readouterr().out.count("finished before, skipped") == 1
    with (data / "policy.jsonl").open("a") as fh:  # the data prepared again: a record more
        fh.write(
            json.dumps({"prompt": "USER: And the ferries?", "completion": "POLITICIAN: They run.", "kind": "policy"})
        )
    main(["stages", "--config", str(config)])
    assert "training on kinds ['policy']" in capsys.readouterr().out
    # no validation in the stage: no adapters/best to hand on or to name as the final adapter
    cfg["stages"][0]["overrides"]["trainer.limit_val_batches"] = 0
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["stages", "--config", str(config)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "fit wrote no" in err and "set adapter: last" in err, err


def test_stages_hand_on_the_adapter_from_the_configured_export_folder(tmp_path, capsys, chdir_root):
    """adapter_export.dirname set: stages looked in adapters/ anyway and refused after training, with advice that
    did not apply (found by a hunt)."""
    root = tmp_path / "exported"
    settings = {"trainer.max_steps": 2, "trainer.enable_progress_bar": False, "trainer.callbacks": [],
                "adapter_export.dirname": "exported", "data.cache_dir": str(tmp_path / "hf-cache")}  # fmt: skip
    config = tmp_path / "stages.yaml"
    config.write_text(yaml.safe_dump({
        "base_config": str(ROOT / "configs" / "demo.yaml"), "root_dir": str(root), "adapter": "last",
        "stages": [{"name": n, "kinds": [n], "overrides": settings} for n in ("style", "policy")],
    }))  # fmt: skip
    main(["stages", "--config", str(config)])
    summary = json.loads((root / "stages.json").read_text())
    first, second = root / "01-style" / "exported" / "last", root / "02-policy" / "exported" / "last"
    assert [s["init_adapter"] for s in summary["stages"]] == [None, str(first)]
    assert summary["final_adapter"] == str(second) and (second / "adapter_model.safetensors").is_file()
