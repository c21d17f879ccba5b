"""The held-out loss pass of ``evaluate``: ``Persona.completion_losses`` (the backbone, then the output head only on
the completion's positions, rows batched longest first) against the pass it replaced (full-vocabulary logits for
every position of every row, rows in input order; copied below as ``old_losses``).

    python scripts/bench_loss_pass.py                      # SmolLM2 NF4 + a LoRA adapter, 64 conversations, batch 8
    python scripts/bench_loss_pass.py --old_batch 16       # the old pass at its own old default batch
    python scripts/bench_loss_pass.py --adapter runs/smollm2-biden/adapters/best --repeats 5

Without ``--adapter`` the base is loaded as ``load_persona`` loads an adapter's base (NF4; on CPU de-quantized once)
and a fresh LoRA adapter (r 16, all linear layers, random B, as configs/smollm2-biden.yaml trains) is put on it, so
the pass goes through the PEFT layers as in ``evaluate``. The conversations are prompt/completion records of
``data/<politician>/*.jsonl`` with the profile's persona system prompt, rendered with the chat template. The passes
(old, with PyTorch's own ``nn.Linear`` products and PEFT's own LoRA forward unless ``--old_products packed``; new
without the shared prefix; new) are timed alternately (one of each per round, after a one-batch warm-up of each);
seconds are the median per pass. Peak memory is the peak over the pass above the memory in use before it: CUDA
allocator bytes on a GPU, the process's resident set (sampled every 2 ms) on CPU. On 2 CPU cores a pass of 64
conversations takes about 1.5 min. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def old_losses(persona, conversations, batch_size):
    """``completion_losses`` before the head was split off (verbatim but for ``self``)."""
    import torch

    from politician_lm.batch import IGNORE_INDEX
    from politician_lm.data.tokenize import encode

    encoded = [
        encode(
            persona.tokenizer, *persona.style.render(c, persona.tokenizer), persona.context_window, add_bos=persona._bos
        )
        for c in conversations
    ]
    out = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            width = max(len(e["input_ids"]) for e in chunk)
            pad = persona.tokenizer.pad_token_id
            ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in chunk])
            mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in chunk])
            labels = torch.tensor([e["labels"] + [IGNORE_INDEX] * (width - len(e["labels"])) for e in chunk])
            device = persona.model.device
            logits = persona.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            targets = labels[:, 1:].to(logits.device)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
            )
            out += [(float(n.sum()), int((t != IGNORE_INDEX).sum())) for n, t in zip(nll, targets)]
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured(fn, cuda: bool) -> tuple[float, int, object]:
    """``(seconds, peak bytes above the start, result)`` of one call."""
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_bytes = torch.cuda.memory_allocated()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t, torch.cuda.max_memory_allocated() - start_bytes, out
    start_bytes, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    return seconds, max(peak[0], _rss()) - start_bytes, out


@contextmanager
def plain_linears(model):
    """``model`` as inference ran it when the issue was filed, for the block: the oneDNN-packed layers multiply as
    plain ``nn.Linear`` (their packed copies kept) and the LoRA layers run PEFT's own forward (model/fused_lora.py)."""
    import torch

    from politician_lm.model.fused_lora import fuse_lora_layers, unfuse_lora_layers
    from politician_lm.model.packed_linear import PackedLinear

    layers = [m for m in model.modules() if type(m) is PackedLinear]
    for layer in layers:
        layer.__class__ = torch.nn.Linear
    fused = unfuse_lora_layers(model.modules())
    try:
        yield model
    finally:
        for layer in layers:
            layer.__class__ = PackedLinear
        if fused:
            fuse_lora_layers(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(ROOT / "checkpoints" / "SmolLM2-135M-Instruct"))
    ap.add_argument("--adapter", default=None, help="a trained adapter folder (default: a fresh random LoRA)")
    ap.add_argument("--politician", default="biden")
    ap.add_argument("--n", type=int, default=64, help="conversations")
    ap.add_argument("--batch", type=int, default=8, help="rows a batch (evaluate's --loss_batch_size default)")
    ap.add_argument(
        "--old_batch",
        type=int,
        default=None,
        help="the old pass's batch (default: --batch; 16 was its default in evaluate)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="timed passes of each (median)")
    ap.add_argument(
        "--old_products",
        choices=["nn.linear", "packed"],
        default="nn.linear",
        help="the old pass's products: PyTorch's nn.Linear, as when the fast-evaluate issue was filed (default), or "
        "oneDNN's packed layers as inference runs now (model/packed_linear.py)",
    )
    args = ap.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model

    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.data.templates import PromptStyle
    from politician_lm.data.tokenize import encode
    from politician_lm.inference import load_persona

    if args.adapter:
        persona = load_persona(args.adapter)
    else:
        if not (Path(args.base) / "config.json").is_file():
            raise SystemExit(f"{args.base}: no model here; run `politician-lm import-model` first")
        base = load_persona(base_model=args.base, quantization="nf4")
        torch.manual_seed(0)
        model = get_peft_model(
            base.model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
        )
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.02)
        model.eval()
        system = load_profile(args.politician, ROOT / "data" / "profiles").get("system_prompt")
        persona = replace(
            base, model=model, style=PromptStyle("chat", system_prompt=system, politician=args.politician)
        )
    rows = [
        json.loads(line)
        for f in sorted((ROOT / "data" / args.politician).glob("*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = [r for r in rows if "prompt" in r and "completion" in r]
    rows = rows[:: max(1, len(rows) // args.n)][: args.n]  # spread over the files (identity, policy, style)
    convs = [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}] for r in rows
    ]
    lengths = [  # prompt + answer, as the pass reads them
        len(encode(persona.tokenizer, *persona.style.render(c, persona.tokenizer), 10**6)["input_ids"]) for c in convs
    ]
    cuda = persona.model.device.type == "cuda"
    vocab = persona.model.get_output_embeddings().weight.shape[0]
    print(
        f"{len(convs)} conversations ({min(lengths)}-{max(lengths)} tokens, mean {statistics.mean(lengths):.0f}), "
        f"batch {args.batch} (old pass {args.old_batch or args.batch}, {args.old_products} products), "
        f"vocabulary {vocab}, {persona.model.device}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    def old_pass(rows):
        if args.old_products == "packed":
            return old_losses(persona, rows, args.old_batch or args.batch)
        with plain_linears(persona.model):
            return old_losses(persona, rows, args.old_batch or args.batch)

    def passes(rows):
        return {
            "old (full logits, input order)": lambda: old_pass(rows),
            "new, prefix not shared": lambda: persona.completion_losses(
                rows, args.batch, on_batch=lambda n: None, share_prefix=False
            ),
            "new (head on labels, shared prefix)": lambda: persona.completion_losses(
                rows, args.batch, on_batch=lambda n: None
            ),
        }

    for go in passes(convs[: args.batch]).values():  # warm-up: one batch of each
        go()
    times: dict[str, list[float]] = {name: [] for name in passes(convs)}
    peaks: dict[str, list[int]] = {name: [] for name in times}
    results: dict[str, object] = {}
    for r in range(args.repeats):
        for name, go in passes(convs).items():
            seconds, peak, results[name] = measured(go, cuda)
            times[name].append(seconds)
            peaks[name].append(peak)
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{t[-1]:.2f} s" for t in times.values()), flush=True)
    old, *news = results.values()
    for new in news:
        assert [n for _, n in new] == [n for _, n in old], "token counts differ"
    worst = max(abs(a - b) / max(abs(b), 1e-12) for new in news for (a, _), (b, _) in zip(new, old))
    o, po = statistics.median(next(iter(times.values()))), max(next(iter(peaks.values())))
    print(f"\n{'pass':<38}{'s/pass':>8}{'peak MiB':>10}{'old/this time':>15}{'peak this/old':>15}")
    for name in times:
        t, pk = statistics.median(times[name]), max(peaks[name])
        print(f"{name:<38}{t:>8.2f}{pk / 2**20:>10.0f}{o / t:>14.2f}x{pk / max(po, 1):>15.2f}")
    print(f"largest relative difference of a row's summed NLL from the old pass {worst:.1e}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
