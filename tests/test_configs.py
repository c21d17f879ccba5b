"""Every shipped config parses, prints offline, and builds its model, data and trainer."""

import pytest
import torch
import yaml

from politician_lm.cli import main, run_trainer_cli
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "biden.yaml", "trump.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_print_config_works_offline(config, capsys, chdir_root):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    raw = yaml.safe_load(config.read_text())
    assert printed["model"]["model_name_or_path"] == raw["model"]["model_name_or_path"]
    assert printed["trainer"]["default_root_dir"] == raw["trainer"]["default_root_dir"]


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_builds(config, chdir_root, tmp_path):
    raw = yaml.safe_load(config.read_text())
    overrides = ["--trainer.default_root_dir", str(tmp_path)]
    if raw["trainer"].get("accelerator") == "gpu" and not torch.cuda.is_available():
        overrides += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]  # build the rest here
    cli = run_trainer_cli(["--config", str(config), *overrides], run=False)
    assert cli.model.hparams.quantization == raw["model"]["quantization"]
    assert cli.datamodule.record_counts and sum(cli.datamodule.record_counts.values()) >= 150
    optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(4, 4))])
    assert type(optimizer).__name__ == raw["model"]["optimizer"]["class_path"].rsplit(".", 1)[1]
    names = {type(cb).__name__ for cb in cli.trainer.callbacks}
    assert {"AdapterExport", "ModelCheckpoint"} <= names
