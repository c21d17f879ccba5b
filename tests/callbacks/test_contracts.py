"""The callbacks' contracts (politician_lm.callbacks.contracts): PoliticianLM and PoliticianDataModule satisfy them,
and a callback given a module or DataModule without their members stops at setup with one line."""

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel, RandomDataset
from torch.utils.data import DataLoader

from politician_lm import PoliticianDataModule, PoliticianLM
from politician_lm.callbacks import contracts
from politician_lm.errors import UserError
from tests.helpers import pc_rows, write_jsonl


def callbacks():
    from politician_lm.callbacks import AdapterExport, PersonaEvaluation, QLoRAThroughput, SideBySide

    return [
        AdapterExport(),
        PersonaEvaluation(identity_probes=None, generic_prompts=0),
        SideBySide(),
        QLoRAThroughput(),
    ]


def trainer(tmp_path, callback):
    return L.Trainer(
        default_root_dir=tmp_path,
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[callback],
    )


def datamodule(tmp_path, tiny_path):
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(8))
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(2))
    return PoliticianDataModule(
        data_path=str(tmp_path / "d"),
        tokenizer=tiny_path,
        politician="biden",
        profiles_dir="data/profiles",
        cache_dir=str(tmp_path / "c"),
    )


PROTOCOLS = {
    "AdapterExport": ("ExportModule", "ExportData"),
    "PersonaEvaluation": ("EvaluationModule", "EvaluationData"),
    "SideBySide": ("AdapterModule", "PromptData"),
    "QLoRAThroughput": ("ThroughputModule", None),
}


@pytest.mark.parametrize("callback", callbacks(), ids=lambda c: type(c).__name__)
def test_a_plain_lightning_module_fails_at_setup_with_one_line(callback, tmp_path):
    with pytest.raises(UserError) as exc:
        trainer(tmp_path, callback).fit(BoringModel(), datamodule=BoringDataModule())
    message = str(exc.value)
    name = type(callback).__name__
    assert "\n" not in message and message.startswith(f"{name} needs a LightningModule with model")
    assert f"contracts.{PROTOCOLS[name][0]}); BoringModel lacks model" in message


@pytest.mark.parametrize(
    "callback", [c for c in callbacks() if PROTOCOLS[type(c).__name__][1]], ids=lambda c: type(c).__name__
)
def test_a_plain_datamodule_fails_at_setup_with_one_line(callback, tmp_path, tiny_path, chdir_root):
    """PoliticianLM is cheap to build: setup stops before its base model loads."""
    model = PoliticianLM(tiny_path, lora_r=4)
    with pytest.raises(UserError) as exc:
        trainer(tmp_path, callback).fit(model, datamodule=BoringDataModule())
    message = str(exc.value)
    assert (
        "\n" not in message and f"contracts.{PROTOCOLS[type(callback).__name__][1]}); BoringDataModule lacks" in message
    )
    assert "tokenizer" in message.rsplit("lacks", 1)[1]
    assert model.model is None  # nothing loaded


def test_adapter_export_without_a_datamodule_fails_at_setup(tmp_path, tiny_path):
    """An adapter exported without the DataModule's prompt_metadata() could not rebuild its prompt."""
    from politician_lm.callbacks import AdapterExport

    with pytest.raises(
        UserError,
        match=r"AdapterExport needs a DataModule with tokenizer, prompt_metadata .*; the "
        r"trainer has no DataModule$",
    ):
        trainer(tmp_path, AdapterExport()).fit(
            PoliticianLM(tiny_path, lora_r=4), train_dataloaders=DataLoader(RandomDataset(32, 64))
        )


@pytest.mark.slow
def test_politician_module_and_datamodule_satisfy_every_contract(tmp_path, tiny_path, chdir_root):
    model, dm = PoliticianLM(tiny_path, lora_r=4), datamodule(tmp_path, tiny_path)
    for protocol in (contracts.ExportModule, contracts.EvaluationModule, contracts.ThroughputModule):
        contracts.require(model, protocol, "test", "LightningModule")
        assert isinstance(model, protocol)
    for protocol in (contracts.ExportData, contracts.PromptData, contracts.EvaluationData):
        contracts.require(dm, protocol, "test", "DataModule")
        assert isinstance(dm, protocol)
    assert (model.model_name_or_path, model.quantization, model.compute_dtype) == (tiny_path, "nf4", None)
    assert not model.head_on_labels_only  # known once the model is built
    model.configure_model()
    assert model.head_on_labels_only and model.compute_dtype == torch.float32
    assert (dm.profiles_dir, dm.val_fraction, dm.seed) == ("data/profiles", 0.1, 42)
    messages, kinds = dm.conversations("val")
    assert len(messages) == len(kinds) == 2 and messages[0][-1]["role"] == "assistant" and kinds == ["policy"] * 2
    assert len(dm.conversations("train")[0]) == 8
    assert dm.conversations("test") == (messages, kinds)  # no test.jsonl: the held-out records are val
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test'"):
        dm.conversations("dev")


def test_members_lists_what_each_protocol_declares():
    assert contracts.members(contracts.ThroughputModule) == ["model", "compute_dtype", "head_on_labels_only"]
    assert contracts.members(contracts.ExportData) == ["tokenizer", "prompt_metadata"]
    assert contracts.members(contracts.EvaluationData) == [
        "tokenizer",
        "style",
        "conversations",
        "data_path",
        "profiles_dir",
        "val_fraction",
        "seed",
    ]
