"""Batched greedy generation: ours (``Persona.generate``, as evaluate, PersonaEvaluation, generate and serve use it)
against plain transformers ``generate`` with the same prompts and settings, and the merged export against base +
adapter.

    python scripts/bench_generation.py                      # SmolLM2 + runs/smollm2-biden/adapters/best, CPU
    python scripts/bench_generation.py --adapter runs/x/adapters/best --batch 16 --max-new-tokens 64

Every configuration gets the same token ids: the adapter's own prompt rendering (chat template, persona system
prompt) of held-out-style prompts from data/<politician>, left-padded to one batch, KV cache on, greedy. Rows:

- ours, base + adapter: ``load_persona`` (on CPU the NF4 base is de-quantized once, then the LoRA adapter on top);
- transformers, NF4 base + adapter: ``from_pretrained`` with the adapter's BitsAndBytes NF4 config and fp32 compute,
  then ``PeftModel.from_pretrained``: what a PEFT/TRL user runs;
- transformers, fp32 base + adapter: the un-quantized base with the adapter (not the trained weights, a speed
  reference for plain fp32 layers);
- ours, merged export: ``politician-lm export`` (the adapter merged into the de-quantized base, fp32) loaded as a
  plain model.

tokens/s counts generated tokens up to and including each row's end-of-sequence token; the time is the median of
``--repeats`` timed calls after one warm-up call. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count_tokens(new_ids, eos: int, pad: int) -> int:
    total = 0
    for row in new_ids.tolist():
        n = next((i + 1 for i, t in enumerate(row) if t == eos), len(row))
        total += n
    return total


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default="runs/smollm2-biden/adapters/best", help="a trained adapter folder")
    ap.add_argument("--batch", type=int, default=16, help="prompts generated together (left-padded)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (median)")
    args = ap.parse_args()
    if not (Path(args.adapter) / "adapter_config.json").is_file():
        raise SystemExit(
            f"{args.adapter}: no adapter here; train one with politician-lm fit --config configs/smollm2-biden.yaml"
        )
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from politician_lm.commands.export import export
    from politician_lm.inference import load_persona
    from politician_lm.model.decoding import generate_new_text
    from politician_lm.model.loading import quantization_config

    persona = load_persona(args.adapter, merge_adapters=True)
    meta = json.loads((Path(args.adapter) / "politician_lm.json").read_text())
    politician = meta.get("politician") or "biden"
    rows = [
        json.loads(line)
        for f in sorted((ROOT / "data" / politician).glob("*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows[:: max(1, len(rows) // args.batch)]][
        : args.batch
    ]
    tok = persona.tokenizer
    batch = tok.pad(
        {"input_ids": [persona.prompt_ids(p) for p in prompts]}, padding=True, padding_side="left", return_tensors="pt"
    )
    width = batch["input_ids"].shape[1]
    settings = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    base_path = meta.get("base_model_path") or meta.get("base_model")
    print(
        f"{len(prompts)} prompts, prompt width {width}, {args.max_new_tokens} new tokens, greedy, KV cache, "
        f"{torch.get_num_threads()} threads; base {base_path}",
        flush=True,
    )

    def ours(p, share_prefix=True):
        def go():
            ids = batch["input_ids"]
            out = generate_new_text(
                p.model,
                tok,
                ids,
                batch["attention_mask"],
                share_prefix=share_prefix,
                do_sample=False,
                max_new_tokens=args.max_new_tokens,
            )
            return out

        return go

    def plain(model):
        model.eval()

        def go():
            with torch.no_grad():
                out = model.generate(**batch, **settings)
            return tok.batch_decode(out[:, width:], skip_special_tokens=True), out[:, width:]

        return go

    # Every configuration stays loaded, and the timed calls go round-robin (one call of each, then again), so a
    # slow minute on a shared machine hits all of them alike.
    merged = persona  # what generate and chat load: the adapter merged into the de-quantized base
    kept = load_persona(args.adapter)  # what evaluate and serve load
    q = quantization_config("nf4", torch.float32)
    nf4 = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(
            base_path, quantization_config=q, dtype=torch.float32, device_map={"": "cpu"}
        ),
        args.adapter,
    )
    fp32 = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32), args.adapter)
    tmp = tempfile.TemporaryDirectory()
    export(args.adapter, f"{tmp.name}/merged", dtype="float32")
    exported = load_persona(base_model=f"{tmp.name}/merged")
    configs = {
        "ours, generate/chat (merged)": ours(merged),
        "ours, merged, prompts not shared": ours(merged, share_prefix=False),
        "ours, adapter kept (evaluate)": ours(kept),
        "transformers, NF4 base + adapter": plain(nf4),
        "transformers, fp32 base + adapter": plain(fp32),
        "ours, merged export": ours(exported),
    }
    texts: dict[str, list[str]] = {}
    for name, go in configs.items():  # warm-up, and the texts
        texts[name] = go() if name.startswith("ours") else go()[0]
    with torch.no_grad():  # decoding steps and generated tokens, from one untimed call (same for every greedy row)
        new = merged.model.generate(**batch, **settings)[:, width:]
    tokens = {name: count_tokens(new, tok.eos_token_id, tok.pad_token_id) for name in configs}
    steps = {name: new.shape[1] for name in configs}
    for name in ("transformers, NF4 base + adapter", "transformers, fp32 base + adapter"):
        out = configs[name]()[1]
        tokens[name], steps[name] = count_tokens(out, tok.eos_token_id, tok.pad_token_id), out.shape[1]
    times: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.repeats):
        for name, go in configs.items():
            t = time.perf_counter()
            go()
            times[name].append(time.perf_counter() - t)
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{t[-1]:.2f}" for t in times.values()), flush=True)
    results = {name: (statistics.median(times[name]), tokens[name], texts[name], steps[name]) for name in configs}
    tmp.cleanup()

    reference = results["ours, generate/chat (merged)"]
    print(
        f"\n{'configuration':<36}{'seconds':>9}{'steps':>7}{'ms/step':>9}{'tokens':>8}{'tokens/s':>10}"
        f"{'ours/this':>11}{'same text as ours':>19}"
    )
    ref_ms = reference[0] / reference[3]
    for name, (secs, n, texts, steps) in results.items():
        same = sum(a == b for a, b in zip(texts, reference[2]))
        print(
            f"{name:<36}{secs:>9.2f}{steps:>7}{1000 * secs / steps:>9.0f}{n:>8}{n / secs:>10.1f}"
            f"{(secs / steps) / ref_ms:>10.2f}x{f'{same}/{len(texts)}':>19}"
        )
    print(
        f"(median of {args.repeats} timed calls after a warm-up, taken round-robin across configurations; steps: "
        "decoding steps of the batch (the longest answer); tokens: generated tokens up to each row's end of sequence; "
        "'ours/this' is the row's time per step "
        "over ours (generate/chat): above 1 means ours is faster)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
