"""The GPU recipes (a 7B base) resolve on a CPU: a typo in configs/biden*.yaml or trump.yaml fails here, not on a GPU
(the trainer's GPU-only strategy and devices too, checked before the CPU run overrides them).

No GPU and no hub here, so the model is Mistral-7B's architecture (transformers' ``MistralConfig`` defaults are the
7B shapes) built on the meta device: no weights are allocated. The LoRA targets, the quantization settings and the
rest of the config are resolved exactly as ``fit`` resolves them.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.strategies import Strategy, StrategyRegistry
from peft import get_peft_model
from transformers import AutoModelForCausalLM, MistralConfig

from politician_lm.model.loading import quantization_config, resolve_compute_dtype
from politician_lm.training import run_trainer_cli
from tests.helpers import ROOT

GPU_CONFIGS = sorted(
    p
    for p in (ROOT / "configs").glob("*.yaml")
    if not p.name.startswith("models")  # registries
    and (yaml.safe_load(p.read_text()) or {}).get("trainer", {}).get("accelerator") == "gpu"
)


def test_the_production_recipes_are_found():
    assert {p.name for p in GPU_CONFIGS} >= {
        "biden.yaml",
        "trump.yaml",
        "biden-ddp.yaml",
        "biden-fsdp.yaml",
    }


def check_gpu_trainer_keys(trainer: dict) -> None:
    """What the CPU run below overrides, checked as a GPU run would resolve it: ``strategy`` a Lightning strategy name
    or a ``Strategy`` class (its ``init_args`` that class's parameters), ``devices`` a count, a list of indices,
    ``-1``, "auto" or a comma-separated string of indices."""
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, dict):
        module, _, name = strategy["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module or "lightning.pytorch.strategies"), name)
        assert issubclass(cls, Strategy), f"trainer.strategy: {cls} is not a Lightning strategy"
        inspect.signature(cls).bind(**strategy.get("init_args", {}))  # a misspelled argument: TypeError
    else:
        known = ("auto", *StrategyRegistry.available_strategies())
        assert strategy in known, f"trainer.strategy: {strategy!r} is none of {known}"
    devices = trainer.get("devices", "auto")
    ok = (
        (isinstance(devices, int) and (devices > 0 or devices == -1))
        or (isinstance(devices, list) and all(isinstance(d, int) and d >= 0 for d in devices))
        or (isinstance(devices, str) and re.fullmatch(r"auto|-1|\d+(,\d+)*,?", devices.replace(" ", "")) is not None)
    )
    assert not isinstance(devices, bool) and ok, f"trainer.devices: {devices!r} is no count, list or 'auto'"


def resolve_recipe(config: Path, tmp_path: Path):
    """The recipe's raw YAML and its CLI, resolved as ``fit`` resolves it but on a CPU (after ``check_gpu_trainer_keys``
    on the GPU settings it overrides)."""
    raw = yaml.safe_load(config.read_text())
    check_gpu_trainer_keys(raw.get("trainer", {}))
    cpu = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"]
    cpu += ["--trainer.precision", "32-true", "--trainer.default_root_dir", str(tmp_path)]
    return raw, run_trainer_cli(["--config", str(config), *cpu], run=False)


TYPOS = [
    ("biden.yaml", "attn_implementation: sdpa", "attn_implementation: spda"),
    ("biden-ddp.yaml", "strategy: ddp", "strategy: dpp"),
    ("biden-ddp.yaml", "devices: 4", "devices: 2O"),
    ("biden-fsdp.yaml", "sharding_strategy: FULL_SHARD", "sharding_stratgy: FULL_SHARD"),
]


@pytest.mark.parametrize(("name", "right", "typo"), TYPOS, ids=[t[2] for t in TYPOS])
def test_a_typo_in_a_production_recipe_fails_before_any_gpu(chdir_root, tmp_path, name, right, typo):
    text = (ROOT / "configs" / name).read_text()
    assert text.count(right) == 1
    config = tmp_path / name
    config.write_text(text.replace(right, typo))
    misspelt = next(word for word in typo.replace(":", " ").split() if word not in right)
    with pytest.raises((AssertionError, TypeError, ValueError), match=re.escape(misspelt)):  # named in the error
        resolve_recipe(config, tmp_path)


@pytest.mark.parametrize("config", GPU_CONFIGS, ids=[p.name for p in GPU_CONFIGS])
def test_production_recipe_builds_its_7b_model_on_the_meta_device(config, chdir_root, tmp_path):
    if "stages" in config.name:
        pytest.skip("a stages file lists fit configs; each of them is checked here on its own")
    raw, cli = resolve_recipe(config, tmp_path)
    hp = cli.model.hparams
    assert "Mistral-7B" in hp.model_name_or_path  # the shapes built below are that model's
    # The settings resolve as configure_model resolves them on a CUDA device.
    dtype = resolve_compute_dtype(hp.compute_dtype, torch.device("cuda"))
    bnb = quantization_config(hp.quantization, dtype, hp.quant_storage)
    assert bnb is not None and bnb.load_in_4bit and bnb.bnb_4bit_quant_type == raw["model"]["quantization"] == "nf4"
    assert bnb.bnb_4bit_use_double_quant and bnb.bnb_4bit_compute_dtype == torch.bfloat16
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(MistralConfig(), torch_dtype=torch.bfloat16)
    peft_model = get_peft_model(model, cli.model.lora_config())  # the settings configure_model uses
    targets = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    # all-linear: every projection of attention and MLP in each of the 32 layers, never the output head
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert sum(1 for _, m in peft_model.named_modules() if hasattr(m, "lora_A")) == 7 * 32
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == hp.lora_r * 32 * (4 * 4096 + 2 * 1024 + 4096 + 4096 + 3 * (4096 + 14336))
    assert (
        type(cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(2, 2))])).__name__
        == (raw["model"]["optimizer"]["class_path"].rsplit(".", 1)[1])
    )
