"""Every shipped config parses, prints offline, and builds its model, data and trainer."""

import pytest
import torch
import yaml

from politician_lm.cli import main
from politician_lm.training import run_trainer_cli
from tests.helpers import ROOT

CONFIGS = sorted(
    p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("models") and "stages" not in p.name
)  # fit configs (models*.yaml are persona registries)


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {
        "demo.yaml",
        "biden.yaml",
        "trump.yaml",
        "smollm2-biden.yaml",
        "smollm2-trump.yaml",
        "sotu-biden.yaml",
        "sotu-trump.yaml",
        "sotu-obama.yaml",
    }


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
@pytest.mark.slow
def test_config_builds(config, chdir_root, tmp_path, request):
    raw = yaml.safe_load(config.read_text())
    overrides = ["--trainer.default_root_dir", str(tmp_path)]
    if (
        "SmolLM2" in raw["model"]["model_name_or_path"]
    ):  # the imported model: a fresh clone has it only after import-model
        overrides += ["--model.model_name_or_path", request.getfixturevalue("smollm2_path")]
    if raw["trainer"].get("accelerator") == "gpu" and not torch.cuda.is_available():
        # build the rest here; the multi-GPU strategy itself is checked in test_scale_out_strategies_build
        overrides += [
            "--trainer.accelerator",
            "cpu",
            "--trainer.precision",
            "32-true",
            "--trainer.strategy",
            "auto",
            "--trainer.devices",
            "1",
        ]
    prepare_config = ROOT / "configs" / "prepare" / config.name
    if prepare_config.is_file():  # a real-speech recipe: its data comes from `politician-lm prepare` first
        from politician_lm.commands.prepare import prepare

        spec = yaml.safe_load(prepare_config.read_text())
        assert spec["output_dir"] == raw["data"]["data_path"]  # the two configs name the same folder
        spec |= {"output_dir": str(tmp_path / "data"), "tokenizer": "checkpoints/tiny-politician"}
        overrides += ["--data.data_path", str(prepare(**spec))]
    cli = run_trainer_cli(["--config", str(config), *overrides], run=False)
    assert cli.model.hparams.quantization == raw["model"]["quantization"]
    assert cli.datamodule.record_counts and sum(cli.datamodule.record_counts.values()) >= 150
    optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(4, 4))])
    assert type(optimizer).__name__ == raw["model"]["optimizer"]["class_path"].rsplit(".", 1)[1]
    names = {type(cb).__name__ for cb in cli.trainer.callbacks}
    assert {"AdapterExport", "ModelCheckpoint"} <= names


@pytest.mark.slow
def test_demo_trains_real_4bit_linear_layers(chdir_root, tmp_path):
    import bitsandbytes as bnb

    cli = run_trainer_cli(["--config", "configs/demo.yaml", "--trainer.default_root_dir", str(tmp_path)], run=False)
    cli.model.configure_model()
    layers = [m for m in cli.model.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and all(m.weight.quant_type == "nf4" for m in layers)
    assert not [
        n
        for n, m in cli.model.model.named_modules()
        if type(m) is torch.nn.Linear and "lora_" not in n and not n.endswith("lm_head")
    ]  # every base linear but the output head is 4-bit


def test_repeated_config_files_merge_later_wins(chdir_root, tmp_path, capsys):
    override = tmp_path / "override.yaml"
    override.write_text("model:\n  lora_r: 4\ndata:\n  batch_size: 2\n")
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                "configs/demo.yaml",
                "--config",
                str(override),
                "--model.lora_alpha",
                "7",
                "--print_config",
            ]
        )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lora_r"] == 4 and printed["model"]["lora_alpha"] == 7
    assert printed["data"]["batch_size"] == 2 and printed["data"]["politician"] == "biden"  # the rest from demo.yaml


def test_help_documents_every_model_and_data_option(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for key in (
        "--model.quantization",
        "--model.lora_r",
        "--data.prompt_format",
        "--data.overlong",
        "--adapter_export.monitor",
    ):
        assert key in out
    assert "QLoRA: 4-bit NormalFloat" in out and "truncate" in out


def test_scale_out_strategies_build():
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy, Strategy
    from transformers.models.mistral.modeling_mistral import MistralDecoderLayer

    ddp = yaml.safe_load((ROOT / "configs" / "biden-ddp.yaml").read_text())
    assert ddp["trainer"]["strategy"] == "ddp" and ddp["trainer"]["devices"] > 1
    fsdp = yaml.safe_load((ROOT / "configs" / "biden-fsdp.yaml").read_text())
    assert fsdp["model"]["quant_storage"] == fsdp["model"]["compute_dtype"] == "bfloat16"
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": fsdp["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy) and strategy.kwargs["use_orig_params"]
    assert MistralDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes


@pytest.mark.slow
def test_wandb_offline_is_read_from_the_configured_loggers(chdir_root, tmp_path, monkeypatch):
    """``--wandb true`` decides online/offline from the environment (``wandb_loggers``); the CLI's offline notice reads
    that decision from the config, in the loggers' order."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from politician_lm.wandb_setup import wandb_loggers, wandb_offline

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_offline(wandb_loggers("r", None)) == [False]
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline(wandb_loggers("r", None)) == [True]
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.delenv("WANDB_MODE")
    cli = run_trainer_cli(
        ["--config", "configs/demo.yaml", "--trainer.default_root_dir", str(tmp_path), "--wandb", "true"], run=False
    )
    assert [type(logger) for logger in cli.trainer.loggers] == [CSVLogger, WandbLogger]
    assert wandb_offline(cli.config.trainer.logger) == [True]  # no API key
    assert wandb_offline(None) == [] and wandb_offline(wandb_loggers("r", None)[:1]) == []
