"""Our fit against Hugging Face TRL's SFTTrainer on the same model, data, LoRA, quantization, batch, steps and seed.

    python scripts/bench_vs_trl.py                 # CPU, tiny demo model, bundled Biden data, 3 repeats (~5 min)
    python scripts/bench_vs_trl.py --gpu           # 7B-shaped Mistral (random weights from the config), seq 1024
    python scripts/bench_vs_trl.py --random-model small --repeats 1   # the random-model path, on a CPU

Every run is a separate child process (one process tree, alternating configurations so machine noise hits all
alike); the table shows medians. Runs: ours with padding-free packing, ours padded (default), TRL with its default
collation, TRL with ``packing=True`` (best-fit-decreasing, padding-free). Same for all: NF4 + double quantization,
LoRA r=8/alpha=16/dropout 0.05 on all linear layers, AdamW, linear schedule without warmup, gradient checkpointing
off, batch of 8 (examples, or packed rows of max_length; 4 with --gpu), fp32 compute on CPU (bf16 on GPU).

Measured between the start of the first and the end of the last optimizer step: real (non-pad) tokens/s, wall
time, padding fraction; peak memory is the child's peak RSS (CPU) or peak CUDA allocation (GPU); final loss is the
mean training loss of the last 5 steps (runs that pack see other examples in each step, so compare it within a
pair); eval loss is the completion-token cross-entropy of the trained adapter on held-out records (every 6th bundled
record, never trained on), computed by one function for every run, so it compares the training itself like for
like. Requires TRL: ``pip install -e '.[bench]'``.
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

def heldout_loss(model, tok):
    """Completion-token cross-entropy on the held-out records: one function, one tokenization, for every run."""
    import torch.nn.functional as F
    from politician_lm.data.tokenize import encode
    model.eval()
    device, total, n = next(model.parameters()).device, 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        for r in heldout:
            e = encode(tok, r["prompt"] + "\n", r["completion"], cfg["max_length"])
            ids, labels = (torch.tensor([e[k]], device=device) for k in ("input_ids", "labels"))
            logits, target = model(input_ids=ids, use_cache=False).logits[0, :-1].float(), labels[0, 1:]
            keep = target != -100
            total += float(F.cross_entropy(logits[keep], target[keep], reduction="sum"))
            n += int(keep.sum())
    return total / n

def finish(model, tok):
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    secs = state["t1"] - state["t0"]
    print("RESULT " + json.dumps({"tokens_per_s": state["tokens"] / secs, "seconds": secs, "peak_mb": peak,
          "padding": 1 - state["tokens"] / state["total"], "loss": sum(state["losses"][-5:]) / len(state["losses"][-5:]),
          "eval_loss": heldout_loss(model, tok)}))

records = [json.loads(l) for l in open(cfg["data"] + "/train.jsonl") if l.strip()]
heldout = [json.loads(l) for l in open(cfg["data"] + "/val.jsonl") if l.strip()]
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
                              packing=cfg["packing"], cache_dir=cfg["cache"])  # train.jsonl (+ val.jsonl, not used in fit)
    model = PoliticianLM(cfg["model"], quantization="nf4", lora_r=8, lora_alpha=16, lora_dropout=0.05, scheduler="linear",
                         warmup_ratio=0.0, optimizer=partial(torch.optim.AdamW, lr=cfg["lr"]))
    trainer = L.Trainer(max_steps=cfg["steps"], accelerator="gpu" if cuda else "cpu", devices=1, logger=False,
                        precision="bf16-mixed" if cuda else "32-true", enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Probe()],
                        default_root_dir=cfg["out"])
    trainer.fit(model, datamodule=dm)
    finish(model.model, dm.tokenizer)
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
    finish(trainer.model, tok)
'''

RUNS = [("ours (packing)", "ours", True), ("ours (padded)", "ours", False), ("TRL defaults", "trl", False),
        ("TRL packing", "trl", True)]


def run(name: str, runner: str, packing: bool, common: dict, tmp: str, i: int) -> dict:
    cfg = {**common, "runner": runner, "packing": packing, "out": f"{tmp}/{runner}-{packing}-{i}", "cache": f"{tmp}/cache"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.split("RESULT ")[-1].splitlines()[0])


SHAPES = {  # random-weight Mistral configs: 7b is Mistral-7B's shape; small checks the same path on a CPU in seconds
    "7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8),
}


def random_mistral(path: str, shape: str, cuda: bool) -> None:
    """A Mistral with random weights built from its config (nothing downloaded), saved in bf16 with our tokenizer."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=32000, num_key_value_heads=8, max_position_embeddings=4096, **SHAPES[shape])
    with torch.device("cuda" if cuda else "cpu"):
        model = MistralForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    del model
    if cuda:
        torch.cuda.empty_cache()  # hand the ~43 GiB used to build it back before the runs start
    AutoTokenizer.from_pretrained(str(ROOT / "checkpoints" / "tiny-politician")).save_pretrained(path)  # ids fit


def split_data(folder: Path) -> None:
    """The bundled Biden records: every 6th held out (val.jsonl, for the eval loss), the rest to train on."""
    lines = [l for f in ("style.jsonl", "policy.jsonl", "identity.jsonl")
             for l in (ROOT / "data" / "biden" / f).read_text().splitlines() if l.strip()]
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(l + "\n" for i, l in enumerate(lines) if i % 6))
    (folder / "val.jsonl").write_text("".join(l + "\n" for i, l in enumerate(lines) if not i % 6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration; the table shows medians")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    ap.add_argument("--batch", type=int, default=None, help="examples (or packed rows) per step; 8, or 4 with --gpu")
    ap.add_argument("--gpu", action="store_true", help="7B-shaped Mistral with random weights, seq 1024 (needs CUDA)")
    ap.add_argument("--random-model", choices=sorted(SHAPES), default=None,
                    help="train a random-weight Mistral of this shape instead of the demo model (--gpu implies 7b)")
    args = ap.parse_args()
    import torch

    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    shape = args.random_model or ("7b" if args.gpu else None)
    args.batch = args.batch or (4 if args.gpu else 8)  # 4 rows x 1024 tokens: about half the activations of 8 rows
    with tempfile.TemporaryDirectory() as tmp:
        model, max_length, lr = str(ROOT / "checkpoints" / "tiny-politician"), 256, 2e-3
        if shape:
            model, lr = f"{tmp}/mistral-{shape}-random", 2e-4
            random_mistral(model, shape, args.gpu)
        if args.gpu:
            max_length = 1024
        split_data(Path(tmp) / "data")
        common = {"model": model, "data": f"{tmp}/data", "batch": args.batch, "steps": args.steps, "seed": 42,
                  "lr": lr, "max_length": max_length, "gpu": args.gpu}
        results: dict[str, list[dict]] = {name: [] for name, *_ in RUNS}
        for i in range(args.repeats):
            for name, runner, packing in RUNS:
                r = run(name, runner, packing, common, tmp, i)
                results[name].append(r)
                print(f"repeat {i}: {name:<15} {r['tokens_per_s']:9.0f} tok/s  train loss {r['loss']:.3f}  "
                      f"eval loss {r['eval_loss']:.3f}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    ours = med["ours (packing)"]
    print(f"\n{'run':<16}{'tokens/s':>10}{'wall s':>9}{'padding':>9}{'peak MB':>9}{'loss':>8}{'eval loss':>11}"
          f"{'ours/this':>11}")
    for name, m in med.items():
        print(f"{name:<16}{m['tokens_per_s']:>10.0f}{m['seconds']:>9.2f}{m['padding']:>9.1%}{m['peak_mb']:>9.0f}"
              f"{m['loss']:>8.3f}{m['eval_loss']:>11.3f}{ours['tokens_per_s'] / m['tokens_per_s']:>10.2f}x")
    print(f"(medians of {args.repeats}; {args.steps} optimizer steps, batch {args.batch}, max_length {max_length}; "
          f"'ours/this' is tokens/s of ours (packing) over the row's)")
    pairs = [("ours (padded)", "TRL defaults"), ("ours (packing)", "TRL packing")]
    print(f"\n{'like for like':<36}{'peak memory ours/TRL':>22}{'eval loss ours - TRL':>22}")
    for a, b in pairs:
        print(f"{a + ' vs ' + b:<36}{med[a]['peak_mb'] / med[b]['peak_mb']:>22.2f}"
              f"{med[a]['eval_loss'] - med[b]['eval_loss']:>+22.3f}")


if __name__ == "__main__":
    main()
