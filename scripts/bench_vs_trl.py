"""Our fit against Hugging Face TRL's SFTTrainer on the same model, data, LoRA, quantization, batch, steps and seed.

    python scripts/bench_vs_trl.py                 # CPU, tiny demo model, bundled Biden data, 3 repeats (~5 min)
    python scripts/bench_vs_trl.py --gpu           # 7B-shaped Mistral (random weights from the config), seq 1024

Every run is a separate child process (one process tree, alternating configurations so machine noise hits all
alike); the table shows medians. Runs: ours with padding-free packing, ours padded (default), TRL with its default
collation, TRL with ``packing=True`` (best-fit-decreasing, padding-free). Same for all: NF4 + double quantization,
LoRA r=8/alpha=16/dropout 0.05 on all linear layers, AdamW, linear schedule without warmup, gradient checkpointing
off, batch of 8 (examples, or packed rows of max_length), fp32 compute on CPU (bf16 on GPU).

Measured between the start of the first and the end of the last optimizer step: real (non-pad) tokens/s, wall
time, padding fraction; peak memory is the child's peak RSS (CPU) or peak CUDA allocation (GPU); final loss is the
mean training loss of the last 5 steps. Requires TRL: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, resource, sys, time
import torch
cfg = json.loads(sys.argv[1])
torch.manual_seed(cfg["seed"])
state = {"tokens": 0, "total": 0, "t0": None, "t1": None, "losses": []}
cuda = torch.cuda.is_available() and cfg["gpu"]

def count(batch):
    mask = batch.get("attention_mask")
    if "real_tokens" in batch:
        state["tokens"] += int(batch["real_tokens"])
    else:
        state["tokens"] += int(mask.sum()) if mask is not None and mask.dim() == 2 else batch["input_ids"].numel()
    state["total"] += batch["input_ids"].numel()

def tick(end):
    if cuda:
        torch.cuda.synchronize()
    state["t1" if end else "t0"] = time.perf_counter() if end or state["t0"] is None else state["t0"]

def finish():
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    secs = state["t1"] - state["t0"]
    print("RESULT " + json.dumps({"tokens_per_s": state["tokens"] / secs, "seconds": secs, "peak_mb": peak,
          "padding": 1 - state["tokens"] / state["total"], "loss": sum(state["losses"][-5:]) / len(state["losses"][-5:])}))

records = [json.loads(l) for l in open(cfg["data"]) if l.strip()]
if cfg["runner"] == "ours":
    import lightning.pytorch as L
    from functools import partial
    from politician_lm import PoliticianDataModule, PoliticianLM

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, i):
            count(batch); tick(False)
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, i):
            tick(True); state["losses"].append(float(outputs["loss"]))

    dm = PoliticianDataModule(data_path=cfg["data"], tokenizer=cfg["model"], batch_size=cfg["batch"], max_length=cfg["max_length"],
                              packing=cfg["packing"], val_fraction=0.5, cache_dir=cfg["cache"])
    dm.files = type(dm.files)(train=dm.files.train, val=dm.files.train)  # train on every record, as TRL does
    model = PoliticianLM(cfg["model"], quantization="nf4", lora_r=8, lora_alpha=16, lora_dropout=0.05, scheduler="linear",
                         warmup_ratio=0.0, optimizer=partial(torch.optim.AdamW, lr=cfg["lr"]))
    trainer = L.Trainer(max_steps=cfg["steps"], accelerator="gpu" if cuda else "cpu", devices=1, logger=False,
                        precision="bf16-mixed" if cuda else "32-true", enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Probe()],
                        default_root_dir=cfg["out"])
    trainer.fit(model, datamodule=dm)
else:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from politician_lm.model.loading import keep_fp32_on_cpu

    dtype = torch.bfloat16 if cuda else torch.float32
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], quantization_config=q, dtype=dtype,
                                                 device_map={"": "cuda" if cuda else "cpu"})
    keep_fp32_on_cpu(model)
    tok = AutoTokenizer.from_pretrained(cfg["model"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ds = Dataset.from_list([{"prompt": r["prompt"] + "\n", "completion": r["completion"]} for r in records])

    class Probe(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            tick(False)
        def on_step_end(self, args, st, control, **kw):
            tick(True)
        def on_log(self, args, st, control, logs=None, **kw):
            if logs and "loss" in logs:
                state["losses"].append(float(logs["loss"]))

    args = SFTConfig(output_dir=cfg["out"], max_steps=cfg["steps"], per_device_train_batch_size=cfg["batch"],
                     learning_rate=cfg["lr"], lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
                     save_strategy="no", report_to=[], use_cpu=not cuda, bf16=cuda, seed=cfg["seed"],
                     max_length=cfg["max_length"], gradient_checkpointing=False, packing=cfg["packing"],
                     dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                                task_type="CAUSAL_LM"), callbacks=[Probe()])
    collate = trainer.data_collator
    def counting(features):
        batch = collate(features)
        count(batch)
        return batch
    trainer.data_collator = counting
    trainer.train_dataset  # built
    trainer.get_train_dataloader = (lambda f: (lambda: _wrap(f())))(trainer.get_train_dataloader)
    def _wrap(loader):
        loader.collate_fn = counting
        return loader
    trainer.train()
finish()
'''

RUNS = [("ours (packing)", "ours", True), ("ours (padded)", "ours", False), ("TRL defaults", "trl", False),
        ("TRL packing", "trl", True)]


def run(name: str, runner: str, packing: bool, common: dict, tmp: str, i: int) -> dict:
    cfg = {**common, "runner": runner, "packing": packing, "out": f"{tmp}/{runner}-{packing}-{i}", "cache": f"{tmp}/cache"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.split("RESULT ")[-1].splitlines()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--gpu", action="store_true", help="7B-shaped Mistral with random weights, seq 1024 (needs CUDA)")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model, max_length, lr = str(ROOT / "checkpoints" / "tiny-politician"), 256, 2e-3
        if args.gpu:
            if not torch.cuda.is_available():
                raise SystemExit("--gpu needs a CUDA device")
            from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

            config = MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096)
            model = f"{tmp}/mistral-7b-random"
            with torch.device("cuda"):
                MistralForCausalLM(config).to(torch.bfloat16).save_pretrained(model)
            tok = AutoTokenizer.from_pretrained(str(ROOT / "checkpoints" / "tiny-politician"))
            tok.save_pretrained(model)  # any tokenizer whose ids fit the vocab
            max_length, lr = 1024, 2e-4
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join((ROOT / "data" / "biden" / f).read_text() for f in ("style.jsonl", "policy.jsonl", "identity.jsonl")))
        common = {"model": model, "data": str(data), "batch": args.batch, "steps": args.steps, "seed": 42, "lr": lr,
                  "max_length": max_length, "gpu": args.gpu}
        results: dict[str, list[dict]] = {name: [] for name, *_ in RUNS}
        for i in range(args.repeats):
            for name, runner, packing in RUNS:
                r = run(name, runner, packing, common, tmp, i)
                results[name].append(r)
                print(f"repeat {i}: {name:<15} {r['tokens_per_s']:9.0f} tok/s  loss {r['loss']:.3f}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    ours = med["ours (packing)"]
    print(f"\n{'run':<16}{'tokens/s':>10}{'wall s':>9}{'padding':>9}{'peak MB':>9}{'loss':>8}{'ours/this':>11}")
    for name, m in med.items():
        print(f"{name:<16}{m['tokens_per_s']:>10.0f}{m['seconds']:>9.2f}{m['padding']:>9.1%}{m['peak_mb']:>9.0f}"
              f"{m['loss']:>8.3f}{ours['tokens_per_s'] / m['tokens_per_s']:>10.2f}x")
    print(f"(medians of {args.repeats}; {args.steps} optimizer steps, batch {args.batch}, max_length {max_length})")


if __name__ == "__main__":
    main()
