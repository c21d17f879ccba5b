"""Our fit against Hugging Face TRL's SFTTrainer on the same model, data, LoRA, quantization, batch, steps and seed.

    python scripts/bench_vs_trl.py --model checkpoints/SmolLM2-135M-Instruct --steps 8 --eval-every 4   # real model, CPU
    python scripts/bench_vs_trl.py                 # CPU, tiny demo model (overhead-bound: says little), 3 repeats
    python scripts/bench_vs_trl.py --gpu           # 7B-shaped Mistral (random weights from the config), seq 1024
    python scripts/bench_vs_trl.py --random-model small --repeats 1   # the random-model path, on a CPU
    python scripts/bench_vs_trl.py --model checkpoints/SmolLM2-135M-Instruct --system-malloc   # no tcmalloc for any run

Every run is a separate child process (one process tree, alternating configurations so machine noise hits all
alike); the table shows medians. Runs: ours with padding-free packing, ours padded (default), TRL with its default
collation, TRL with ``packing=True`` (best-fit-decreasing, padding-free), and on CPU TRL packing once more under
tcmalloc, the allocator ours runs under (``politician_lm/allocator.py``), to show what the allocator alone gives.
With ``--system-malloc`` ours runs again with POLITICIAN_LM_MALLOC_TRIM=0, to show what returning the freed heap
before every training batch costs and saves; with ``--peft-lora-rows`` again with POLITICIAN_LM_FUSED_LORA=0 (PEFT's
own LoRA forward, see politician_lm/model/fused_lora.py).
Same for all: NF4 + double quantization, LoRA r=8/alpha=16 on all linear layers (dropout ``--lora-dropout``, 0 by
default), AdamW, linear schedule without warmup, gradient checkpointing off, batch of 8 (examples, or packed rows of
max_length; 4 with --gpu), fp32 compute on CPU (bf16 on GPU), plain prompt/completion text of the bundled Biden data.

Measured between the start of the first and the end of the last optimizer step, minus the held-out evaluations:
real (non-pad) tokens/s, training seconds, padding fraction; peak memory is the child's peak RSS (CPU) or peak CUDA
allocation (GPU); final loss is the mean training loss of the last 5 steps (runs that pack see other examples in
each step, so compare it within a pair); eval loss is the completion-token cross-entropy of the adapter on held-out
records (every 6th bundled record, never trained on), computed by one function for every run every
``--eval-every`` steps and at the end. 'to target s' is the training time until the held-out loss first reached the
best loss of the worst run.

GFLOP/s counts useful work only, the same formula for every run (so logits a run computes but does not need earn it
nothing), for a frozen (Q)LoRA base: per trained token 4 * N_base (forward, and the input-gradient backward; no weight
gradient for frozen weights) + 6 * N_lora (forward, input and weight gradients), per example of L tokens and per
layer 3 * 2 * 2 * d_attn * L(L+1)/2 for causal attention (forward QK^T and AV, backward twice that), and per
labelled token 4 * V * d for the output head. MFU divides it by this machine's fp32 GEMM rate measured on the
model's own linear shapes (best of repeated ``torch.mm``). Requires TRL: ``pip install -e '.[bench]'`` (checked at
start-up, with every count and rate: one line each).
"""  # noqa: E501 (the first usage line above is printed by --help as it is)

from __future__ import annotations

import argparse
import json
import os
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
state = {"tokens": 0, "total": 0, "t0": None, "t1": None, "losses": [], "eval_s": 0.0, "curve": [], "seqs": [],
         "labelled": 0}
cuda = torch.cuda.is_available() and cfg["gpu"]

def count(batch):
    mask = batch.get("attention_mask")
    if "real_tokens" in batch:
        state["tokens"] += int(batch["real_tokens"])
    else:
        state["tokens"] += int(mask.sum()) if mask is not None and mask.dim() == 2 else batch["input_ids"].numel()
    state["total"] += batch["input_ids"].numel()
    labels = batch["labels"]
    state["labelled"] += int((labels[:, 1:] != -100).sum())
    pos = batch.get("position_ids")
    if pos is not None and pos.dim() == 2:  # packed: an example starts wherever the position restarts at 0
        for row, lab in zip(pos.tolist(), labels.tolist()):
            starts = [i for i, p in enumerate(row) if p == 0] + [len(row)]
            state["seqs"] += [b - a for a, b in zip(starts, starts[1:]) if any(l != -100 for l in lab[a:b])]
    elif mask is not None and mask.dim() == 2:
        state["seqs"] += [int(n) for n in mask.sum(1)]
    else:
        state["seqs"] += [batch["input_ids"].shape[1]] * batch["input_ids"].shape[0]

def tick(end):
    if cuda:
        torch.cuda.synchronize()
    state["t1" if end else "t0"] = time.perf_counter() if end or state["t0"] is None else state["t0"]
    if end:
        state["train_s"] = state["t1"] - state["t0"] - state["eval_s"]  # evaluations so far are not training

def checkpoint_eval(model, tok, step):
    """Held-out loss every ``eval_every`` steps; its time is taken out of the training clock."""
    if step % cfg["eval_every"] and step != cfg["steps"]:
        return
    t = time.perf_counter()
    loss = heldout_loss(model, tok)
    model.train()
    spent = time.perf_counter() - t
    state["curve"].append([t - state["t0"] - state["eval_s"], step, loss])
    state["eval_s"] += spent

def flops(model):
    """Useful FLOPs of the trained tokens for a frozen (Q)LoRA base (docs/performance.md): linear layers forward and
    input-gradient backward 4*N_base per token, LoRA 6*N_lora per token, causal attention 3 * 2*2*d*L(L+1)/2 per
    layer and example of length L, the output head 4*V*d per labelled token only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    c = base.config.get_text_config()
    head = base.get_output_embeddings()
    n_base = n_lora = 0
    for name, m in base.named_modules():
        if (m is head or hasattr(m, "base_layer") or not hasattr(m, "weight") or m.weight is None
                or m.weight.dim() != 2 or "embed" in name):
            continue  # a PEFT wrapper (base_layer) would count its base linear twice
        if "lora_" in name:
            n_lora += m.weight.numel()
        elif hasattr(m, "in_features") and hasattr(m, "out_features"):
            n_base += m.in_features * m.out_features
    d_attn = c.num_attention_heads * getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)
    tokens = sum(state["seqs"])
    attn = sum(3 * c.num_hidden_layers * 2 * d_attn * L * (L + 1) for L in state["seqs"])
    return (4 * n_base + 6 * n_lora) * tokens + attn + 4 * c.vocab_size * c.hidden_size * state["labelled"]

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
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    secs = state["train_s"]
    print("RESULT " + json.dumps({"tokens_per_s": state["tokens"] / secs, "seconds": secs, "peak_mb": peak,
          "gflop_s": flops(model) / secs / 1e9, "curve": state["curve"],
          "padding": 1 - state["tokens"] / state["total"],
          "loss": sum(state["losses"][-5:]) / len(state["losses"][-5:]),
          "eval_loss": state["curve"][-1][2]}))

records = [json.loads(l) for l in open(cfg["data"] + "/train.jsonl") if l.strip()]
heldout = [json.loads(l) for l in open(cfg["data"] + "/val.jsonl") if l.strip()]
if cfg["runner"] == "ours":
    import lightning.pytorch as L
    from functools import partial
    from politician_lm import PoliticianDataModule, PoliticianLM
    if not cfg.get("lean_dropout", True):  # PEFT's own LoRA dropout (a dropped copy kept per layer), to compare
        import politician_lm.model.build as build
        build.lean_lora_dropout = lambda model: 0

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, i):
            count(batch); tick(False)
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, i):
            tick(True); state["losses"].append(float(outputs["loss"]))
            checkpoint_eval(pl_module.model, trainer.datamodule.tokenizer, trainer.global_step)

    # train.jsonl (+ val.jsonl, not used in fit)
    dm = PoliticianDataModule(data_path=cfg["data"], tokenizer=cfg["model"], batch_size=cfg["batch"],
                              max_length=cfg["max_length"], packing=cfg["packing"], cache_dir=cfg["cache"])
    model = PoliticianLM(cfg["model"], quantization="nf4", lora_r=8, lora_alpha=16, lora_dropout=cfg["dropout"],
                         scheduler="linear", warmup_ratio=0.0, optimizer=partial(torch.optim.AdamW, lr=cfg["lr"]))
    trainer = L.Trainer(max_steps=cfg["steps"], accelerator="gpu" if cuda else "cpu", devices=1, logger=False,
                        precision="bf16-mixed" if cuda else "32-true", enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[Probe()], default_root_dir=cfg["out"])
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
        def on_step_end(self, args, st, control, model=None, processing_class=None, **kw):
            tick(True)
            checkpoint_eval(model, tok, st.global_step)
        def on_log(self, args, st, control, logs=None, **kw):
            if logs and "loss" in logs:
                state["losses"].append(float(logs["loss"]))

    args = SFTConfig(output_dir=cfg["out"], max_steps=cfg["steps"], per_device_train_batch_size=cfg["batch"],
                     learning_rate=cfg["lr"], lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
                     save_strategy="no", report_to=[], use_cpu=not cuda, bf16=cuda, seed=cfg["seed"],
                     max_length=cfg["max_length"], gradient_checkpointing=False, packing=cfg["packing"],
                     dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=cfg["dropout"],
                                                target_modules="all-linear", task_type="CAUSAL_LM"),
                         callbacks=[Probe()])
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

RUNS = [
    ("ours (packing)", "ours", True, "default"),
    ("ours (padded)", "ours", False, "default"),
    ("TRL defaults", "trl", False, "system"),
    ("TRL packing", "trl", True, "system"),
]
# The allocator on its own: TRL packing under tcmalloc too (ours uses it by default, as the CLI does; see allocator.py)
TCMALLOC_RUN = ("TRL packing+tcm", "trl", True, "tcmalloc")
# Under --system-malloc: ours again without returning the freed heap before each batch (POLITICIAN_LM_MALLOC_TRIM=0),
# to show what allocator.release_freed_heap costs and saves
KEEP_RUNS = [("ours pack notrim", "ours", True, "system-keep"), ("ours pad notrim", "ours", False, "system-keep")]
# With --peft-dropout-rows: ours again with PEFT's own LoRA dropout instead of model.lora_dropout's (same draws, same
# numbers, a dropped-out copy of each adapted layer's input kept for backward); only with --lora-dropout above 0
PEFT_DROPOUT_RUNS = [
    ("peft-drop pack", "ours", True, "peft-dropout"),
    ("peft-drop padded", "ours", False, "peft-dropout"),
]
# With --peft-lora-rows: ours again with PEFT's own LoRA forward (POLITICIAN_LM_FUSED_LORA=0) instead of
# model.fused_lora's one addmm, under the same allocator
PEFT_LORA_RUNS = [("peft-lora pack", "ours", True, "peft-lora"), ("peft-lora padded", "ours", False, "peft-lora")]


def run(name: str, runner: str, packing: bool, alloc: str, common: dict, tmp: str, i: int) -> dict:
    from politician_lm import allocator
    from politician_lm.model import fused_lora

    cfg = {
        **common,
        "runner": runner,
        "packing": packing,
        "out": f"{tmp}/{runner}-{packing}-{alloc}-{i}",
        "cache": f"{tmp}/cache",
        "lean_dropout": alloc != "peft-dropout",
    }
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV, allocator.TRIM_ENV)}
    system = alloc.startswith("system") or (alloc.startswith("peft-") and common.get("system_malloc"))
    env = allocator.environment(env) if not system else env
    if alloc == "system-keep":
        env[allocator.TRIM_ENV] = "0"
    if alloc == "peft-lora":
        env[fused_lora.SWITCH] = "0"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.split("RESULT ")[-1].splitlines()[0])
    result["allocator"] = env.get(allocator.ENV, "system") + (" (no trim)" if alloc == "system-keep" else "")
    return result


def gemm_peak(model: str | None, tokens: int) -> float:
    """This machine's fp32 matmul rate (GFLOP/s), best of repeated GEMMs of the model's own linear shapes."""
    import time

    import torch

    shapes = [(576, 1536), (1536, 576), (576, 576)]
    if model and (Path(model) / "config.json").is_file():
        c = json.loads((Path(model) / "config.json").read_text())
        h, f = c.get("hidden_size"), c.get("intermediate_size")
        if h and f:
            shapes = [(h, f), (f, h), (h, h)]
    best = 0.0
    for k, n in shapes:
        a, b = torch.randn(tokens, k), torch.randn(k, n)
        for _ in range(3):
            torch.mm(a, b)
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(10):
                torch.mm(a, b)
            best = max(best, 10 * 2 * tokens * k * n / (time.perf_counter() - t) / 1e9)
    return best


def time_to(curve: list, target: float) -> float | None:
    """Training seconds until the held-out loss first reached ``target`` (None if it never did)."""
    return next((secs for secs, _, loss in curve if loss <= target), None)


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
    lines = [
        line
        for f in ("style.jsonl", "policy.jsonl", "identity.jsonl")
        for line in (ROOT / "data" / "biden" / f).read_text().splitlines()
        if line.strip()
    ]
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(line + "\n" for i, line in enumerate(lines) if i % 6))
    (folder / "val.jsonl").write_text("".join(line + "\n" for i, line in enumerate(lines) if not i % 6))


def check_args(args: argparse.Namespace) -> None:
    """Exit with one line for a value no run can take, or a missing TRL (every table compares against it), before
    any run starts."""
    for flag in ("repeats", "steps", "eval_every", "batch"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            sys.exit(f"--{flag.replace('_', '-')} must be 1 or more (got {value})")
    if not 0 <= args.lora_dropout < 1:
        sys.exit(f"--lora-dropout must be in [0, 1) (got {args.lora_dropout})")
    import importlib.util

    if importlib.util.find_spec("trl") is None:
        sys.exit("TRL is not installed: install the bench extra (pip install -e '.[bench]') to compare against it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration; the table shows medians")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    ap.add_argument("--batch", type=int, default=None, help="examples (or packed rows) per step; 8, or 4 with --gpu")
    ap.add_argument(
        "--model",
        default=None,
        help="a local model folder to train, e.g. checkpoints/SmolLM2-135M-Instruct (politician-lm "
        "import-model); default: the tiny demo model",
    )
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-3 tiny model, 2e-4 otherwise)")
    ap.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout of every run (default 0)")
    ap.add_argument(
        "--eval-every",
        type=int,
        default=5,
        help="held-out loss every N steps (and at the end), for time-to-target; not counted as training",
    )
    ap.add_argument(
        "--no-allocator-row",
        action="store_true",
        help="skip the extra 'TRL packing+tcm' run (TRL packing under tcmalloc, as ours runs)",
    )
    ap.add_argument(
        "--system-malloc",
        action="store_true",
        help="run every configuration under the C library's malloc (a machine without tcmalloc: ours then runs as "
        "`politician-lm` does with POLITICIAN_LM_ALLOCATOR=system, returning the freed heap before each batch), "
        "plus ours again with POLITICIAN_LM_MALLOC_TRIM=0 (the heap kept); implies --no-allocator-row",
    )
    ap.add_argument(
        "--peft-dropout-rows",
        action="store_true",
        help="add ours again with PEFT's own LoRA dropout (which keeps a dropped-out copy of each adapted layer's "
        "input) in place of politician_lm.model.lora_dropout's, under the same allocator; needs --lora-dropout",
    )
    ap.add_argument(
        "--peft-lora-rows",
        action="store_true",
        help="add ours again with PEFT's own LoRA forward (POLITICIAN_LM_FUSED_LORA=0) in place of "
        "politician_lm.model.fused_lora's one addmm, under the same allocator",
    )
    ap.add_argument("--gpu", action="store_true", help="7B-shaped Mistral with random weights, seq 1024 (needs CUDA)")
    ap.add_argument(
        "--random-model",
        choices=sorted(SHAPES),
        default=None,
        help="train a random-weight Mistral of this shape instead of the demo model (--gpu implies 7b)",
    )
    ap.add_argument(
        "--random-dir",
        default=None,
        help="build the random-weight model in this folder and keep it (reused if it holds one), e.g. for a "
        "following `politician-lm fit --config configs/biden.yaml --model.model_name_or_path DIR`",
    )
    ap.add_argument(
        "--only",
        choices=("packing", "padded"),
        default=None,
        help="run one like-for-like pair only (ours and TRL, packing or padded), e.g. to fit a short GPU lease",
    )
    args = ap.parse_args()
    check_args(args)
    import torch

    from politician_lm import allocator

    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    if args.model and not (Path(args.model) / "config.json").is_file():
        raise SystemExit(
            f"{args.model}: not a model folder (no config.json); for SmolLM2 run politician-lm import-model"
        )
    shape = args.random_model or ("7b" if args.gpu else None)
    args.batch = args.batch or (4 if args.gpu else 8)  # 4 rows x 1024 tokens: about half the activations of 8 rows
    runs = [r for r in RUNS if args.only is None or r[2] == (args.only == "packing")]
    if args.system_malloc:
        runs = [(name, runner, packing, "system") for name, runner, packing, _ in runs]
        runs += [r for r in KEEP_RUNS if args.only is None or r[2] == (args.only == "packing")]
    elif not args.gpu and not args.no_allocator_row and allocator.tcmalloc_library():
        runs.append(TCMALLOC_RUN)
    if args.peft_dropout_rows:
        if not args.lora_dropout:
            raise SystemExit("--peft-dropout-rows compares LoRA dropouts: give --lora-dropout above 0")
        runs += [r for r in PEFT_DROPOUT_RUNS if args.only is None or r[2] == (args.only == "packing")]
    if args.peft_lora_rows:
        runs += [r for r in PEFT_LORA_RUNS if args.only is None or r[2] == (args.only == "packing")]
    with tempfile.TemporaryDirectory() as tmp:
        model, max_length, lr = str(ROOT / "checkpoints" / "tiny-politician"), 256, 2e-3
        if args.model:
            model, lr = str(Path(args.model).resolve()), 2e-4
        if shape:
            model, lr = f"{tmp}/mistral-{shape}-random", 2e-4
            if args.random_dir:
                model = str(Path(args.random_dir).resolve())
            if not (Path(model) / "config.json").is_file():
                random_mistral(model, shape, args.gpu)
        if args.gpu:
            max_length = 1024
        lr = args.lr or lr
        split_data(Path(tmp) / "data")
        peak = None if args.gpu else gemm_peak(model, args.batch * max_length)
        common = {
            "model": model,
            "data": f"{tmp}/data",
            "batch": args.batch,
            "steps": args.steps,
            "seed": 42,
            "lr": lr,
            "max_length": max_length,
            "gpu": args.gpu,
            "dropout": args.lora_dropout,
            "eval_every": args.eval_every,
            "system_malloc": args.system_malloc,
        }
        results: dict[str, list[dict]] = {name: [] for name, *_ in runs}
        for i in range(args.repeats):
            for name, runner, packing, alloc in runs:
                r = run(name, runner, packing, alloc, common, tmp, i)
                results[name].append(r)
                print(
                    f"repeat {i}: {name:<16} {r['tokens_per_s']:7.1f} tok/s  peak {r['peak_mb']:6.0f} MB  "
                    f"train loss {r['loss']:.3f}  eval loss {r['eval_loss']:.3f}  ({r['allocator']} malloc)",
                    flush=True,
                )
    # time to target: the held-out loss every run reached (the worst run's best), in training seconds
    target = max(min(loss for *_, loss in r["curve"]) for rs in results.values() for r in rs)
    for rs in results.values():
        for r in rs:
            r["to_target_s"] = time_to(r["curve"], target)
    keys = ("tokens_per_s", "seconds", "padding", "peak_mb", "loss", "eval_loss", "gflop_s", "to_target_s")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in results.items()}
    ours_name = "ours (packing)" if "ours (packing)" in med else "ours (padded)"
    ours = med[ours_name]
    mfu_head = f"{'MFU':>6}" if peak else ""
    print(
        f"\n{'run':<17}{'tokens/s':>9}{'train s':>9}{'padding':>8}{'peak MB':>9}{'loss':>7}{'eval loss':>10}"
        f"{'to target s':>12}{'GFLOP/s':>9}{mfu_head}{'ours/this':>10}"
    )
    for name, m in med.items():
        mfu = f"{m['gflop_s'] / peak:>6.0%}" if peak else ""
        print(
            f"{name:<17}{m['tokens_per_s']:>9.1f}{m['seconds']:>9.1f}{m['padding']:>8.1%}{m['peak_mb']:>9.0f}"
            f"{m['loss']:>7.3f}{m['eval_loss']:>10.3f}{m['to_target_s']:>12.1f}{m['gflop_s']:>9.1f}{mfu}"
            f"{ours['tokens_per_s'] / m['tokens_per_s']:>9.2f}x"
        )
    print(
        f"(medians of {args.repeats}; {args.steps} optimizer steps, batch {args.batch}, max_length {max_length}, "
        f"lr {lr}, LoRA dropout {args.lora_dropout}; 'to target s' is training seconds until the held-out loss "
        f"reached {target:.3f}, the best loss the worst run reached (checked every {args.eval_every} steps); "
        f"'ours/this' is tokens/s of {ours_name} over the row's"
        + (
            f"; MFU is useful GFLOP/s over this machine's fp32 GEMM peak of {peak:.0f} GFLOP/s, measured on the "
            "model's own linear shapes)"
            if peak
            else ")"
        )
    )
    spread = {name: max(r["eval_loss"] for r in rs) - min(r["eval_loss"] for r in rs) for name, rs in results.items()}
    print(f"eval-loss noise: largest spread between repeats of one configuration {max(spread.values()):.3f}")
    pairs = [("ours (padded)", "TRL defaults"), ("ours (packing)", "TRL packing")]
    print(f"\n{'like for like':<36}{'tokens/s ours/TRL':>19}{'peak memory ours/TRL':>22}{'eval loss ours - TRL':>22}")
    for a, b in pairs:
        if a not in med:
            continue
        print(
            f"{a + ' vs ' + b:<36}{med[a]['tokens_per_s'] / med[b]['tokens_per_s']:>19.2f}"
            f"{med[a]['peak_mb'] / med[b]['peak_mb']:>22.2f}{med[a]['eval_loss'] - med[b]['eval_loss']:>+22.3f}"
        )


if __name__ == "__main__":
    main()
