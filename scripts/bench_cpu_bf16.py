"""Why training on a CPU computes in fp32: bf16 against fp32 on this CPU, side by side in one run.

1. The matrix product alone (``F.linear``, SmolLM2's MLP shape, 2,048 rows), fp32 and bf16, once with every
   instruction set oneDNN finds here and again with oneDNN capped (``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``)
   at AVX-512 without its bf16 instructions and at AVX2, as on most laptops; each in a fresh process.
2. A QLoRA training step (SmolLM2 NF4 + LoRA r 16 on all linear layers, three padded batches of 8 rows of the
   prepared data, forward and backward): fp32 (``compute_dtype: float32``, the CPU default), fp32 under bf16
   autocast (``precision: bf16-mixed``) and bf16 throughout (``compute_dtype: bfloat16``, ``precision:
   bf16-true``), alternated, the first round a warm-up; medians and the losses, which bf16 changes.

    python scripts/bench_cpu_bf16.py --model checkpoints/SmolLM2-135M-Instruct --data runs/data/sotu-biden
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISAS = (("every instruction set", None), ("AVX-512, no bf16", "AVX512_CORE"), ("AVX2", "AVX2"))
_GEMM = """
import time, torch
a, w = torch.randn(2048, 576), torch.randn(1536, 576)
for dtype in (torch.float32, torch.bfloat16):
    x, y = a.to(dtype), w.to(dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, y)
    t = time.perf_counter()
    for _ in range(20):
        torch.nn.functional.linear(x, y)
    print(2 * 2048 * 576 * 1536 * 20 / (time.perf_counter() - t) / 1e9)
"""


def gemm_rates(isa: str | None) -> tuple[float, float]:
    """GFLOP/s of fp32 and bf16 ``F.linear`` in a fresh process with oneDNN and MKL capped at ``isa``."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    if isa:
        env.update(ONEDNN_MAX_CPU_ISA=isa, MKL_ENABLE_INSTRUCTIONS=isa)
    out = subprocess.run([sys.executable, "-c", _GEMM], env=env, capture_output=True, text=True, check=True).stdout
    fp32, bf16 = (float(v) for v in out.split())
    return fp32, bf16


def step_times(model_path: str, data: str, rounds: int) -> dict[str, tuple[float, list[float], int]]:
    """``{setting: (median seconds of the three batches, their losses, tokens)}``."""
    import torch

    from politician_lm import PoliticianDataModule, PoliticianLM

    def build(dtype: str) -> PoliticianLM:
        torch.manual_seed(0)
        module = PoliticianLM(
            model_name_or_path=model_path,
            quantization="nf4",
            lora_r=16,
            lora_alpha=32,
            target_modules="all-linear",
            compute_dtype=dtype,
            optimizer=partial(torch.optim.AdamW, lr=1e-3),
        )
        module.configure_model()
        return module

    models = {"fp32": build("float32"), "bf16": build("bfloat16")}
    models["bf16"].model.to(torch.bfloat16)  # what Lightning's bf16-true does to the trainable weights too
    dm = PoliticianDataModule(data_path=data, tokenizer=model_path, max_length=320, batch_size=8)
    dm.setup("fit")
    batches = [b for b, _ in zip(dm.train_dataloader(), range(3))]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def run(key: str, autocast: bool) -> tuple[float, list[float]]:
        module, losses = models[key], []
        start = time.perf_counter()
        for batch in batches:
            module.model.zero_grad(set_to_none=True)
            torch.manual_seed(5)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with ctx:
                loss = module.scorer.token_loss(batch)
            loss.backward()
            losses.append(loss.item())
        return time.perf_counter() - start, losses

    settings = {
        "fp32 (the CPU default)": ("fp32", False),
        "bf16 autocast": ("fp32", True),
        "bf16 throughout": ("bf16", False),
    }
    times: dict[str, list[float]] = {name: [] for name in settings}
    losses: dict[str, list[float]] = {}
    for r in range(rounds + 1):
        for name, (key, autocast) in settings.items():
            seconds, losses[name] = run(key, autocast)
            if r:
                times[name].append(seconds)
            print(f"round {r} {name:<24} {seconds:6.2f} s", flush=True)
    return {name: (statistics.median(times[name]), losses[name], tokens) for name in settings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "SmolLM2-135M-Instruct"), help="a local model folder")
    ap.add_argument("--data", default=str(ROOT / "runs" / "data" / "sotu-biden"), help="prepared data (train.jsonl)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds of the training step after a warm-up")
    args = ap.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"{args.model}: not a model folder; run politician-lm import-model first")
    if not (Path(args.data) / "train.jsonl").is_file():
        raise SystemExit(
            f"{args.data}: no train.jsonl; run politician-lm prepare --config configs/prepare/sotu-biden.yaml"
        )
    print("matrix product, 2048 x 576 by 576 x 1536 (GFLOP/s):")
    for label, isa in ISAS:
        fp32, bf16 = gemm_rates(isa)
        print(f"  {label:<22} fp32 {fp32:6.0f}  bf16 {bf16:6.0f}  bf16/fp32 {bf16 / fp32:5.2f}x")
    results = step_times(args.model, args.data, args.rounds)
    base = results["fp32 (the CPU default)"][0]
    print("training step, three batches of 8 rows (medians):")
    for name, (seconds, losses, tokens) in results.items():
        print(
            f"  {name:<24} {seconds:6.2f} s  {tokens / seconds:6.1f} tokens/s  {base / seconds:4.2f}x fp32's speed  "
            f"losses {', '.join(f'{v:.4f}' for v in losses)}"
        )


if __name__ == "__main__":
    main()
