"""A real 2-process DDP fit on CPU (gloo) through the CLI: synchronised LoRA weights, and only rank 0 exports."""

import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

PROBE = '''
import logging
import torch, lightning.pytorch as L

class Probe(L.Callback):
    """Saves, per rank, the trainable weights after fit, and logs what this rank's AdapterExport wrote to
    rank<N>.log."""

    def __init__(self, out: str):
        self.out = out
        self.examples = 0

    def setup(self, trainer, pl_module, stage):
        export_log = logging.getLogger("politician_lm.callbacks.export")
        export_log.setLevel(logging.INFO)
        export_log.addHandler(logging.FileHandler(f"{self.out}/rank{trainer.global_rank}.log"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.examples += (int(batch["sequences"]) if "sequences" in batch
                          else batch["index"].shape[0] if "index" in batch
                          else batch["input_ids"].shape[0])

    def on_train_end(self, trainer, pl_module):
        state = {n: p.detach().cpu() for n, p in pl_module.named_parameters() if p.requires_grad}
        reference = getattr(pl_module, "reference", {}).get("train")
        torch.save({"world": trainer.world_size, "step": trainer.global_step, "state": state,
                    "reference": reference,
                    "examples": self.examples, "train_size": len(trainer.datamodule.train_dataset)},
                   f"{self.out}/rank{trainer.global_rank}.pt")
'''


def dpo_pairs(tmp_path):
    """Preference pairs from data/biden with a fixed generic rejected answer (no generation needed)."""
    import json

    from politician_lm.artifacts.jsonl import read_jsonl
    from politician_lm.data import records

    rows = []
    for path in records.discover(ROOT / "data" / "biden").train:
        for _, obj in read_jsonl(path):
            rows.append(
                {
                    "prompt": obj["prompt"],
                    "chosen": obj["completion"],
                    "kind": obj["kind"],
                    "rejected": "POLITICIAN: As an AI assistant, I do not have personal opinions on that topic.",
                }
            )
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [
        "--data.data_path",
        str(tmp_path / "pairs"),
        "--model.objective",
        "dpo",
        "--data.batch_size",
        "4",
        "--model.sft_weight",
        "0.5",
    ]


@pytest.mark.parametrize("extra", [[], ["--data.packing", "true"], "dpo"], ids=["padded", "packing", "dpo"])
def test_two_process_ddp_on_cpu(tmp_path, extra):
    if extra == "dpo":
        extra = dpo_pairs(tmp_path)
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    root = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "politician_lm.cli",
            "fit",
            "--config",
            "configs/demo.yaml",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(root),
            "--trainer.enable_progress_bar",
            "false",
            "--data.cache_dir",
            str(tmp_path / "hf-cache"),
            "--trainer.callbacks+=ddp_probe.Probe",
            f"--trainer.callbacks.out={tmp_path}",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["step"] == ranks[1]["step"] > 0
    for name, weight in ranks[0]["state"].items():
        assert torch.equal(weight, ranks[1]["state"][name]), name  # gradients were averaged across ranks
    seen, size = [r["examples"] for r in ranks], ranks[0]["train_size"]
    assert size <= sum(seen) < size + max(seen) / ranks[0]["step"] * 2  # each rank its own share (+ padding batches)
    if "dpo" in extra:  # every rank scored every pair with the same starting weights
        assert ranks[0]["reference"].shape[0] == size and torch.equal(ranks[0]["reference"], ranks[1]["reference"])
    lora_b = [w for n, w in ranks[0]["state"].items() if "lora_B" in n]
    assert any(w.abs().sum() > 0 for w in lora_b), "the adapters must have trained"
    written = [(tmp_path / f"rank{r}.log").read_text().splitlines() for r in (0, 1)]
    assert any(f"{root / 'adapters' / 'best'} " in line for line in written[0])
    assert f"{root / 'adapters' / 'last'} " in written[0][-1] and written[1] == []  # only rank 0 writes
    assert (root / "adapters" / "last" / "adapter_model.safetensors").is_file()
