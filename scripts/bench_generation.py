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
    from politician_lm.generation import load_persona
    from politician_lm.model.loading import quantization_config

    persona = load_persona(args.adapter, merge_adapters=True)  # what generate and chat load
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

    results: dict[str, tuple[float, int, list[str], int]] = {}

    def ours(p):
        def go():
            return p.generate(prompts, batch_size=args.batch, max_new_tokens=args.max_new_tokens, do_sample=False)

        secs, texts = timed(go, args.repeats)
        # the generated token count, from one untimed call of the same model on the same batch
        with torch.no_grad():
            out = p.model.generate(**batch, **settings)
        return secs, count_tokens(out[:, width:], tok.eos_token_id, tok.pad_token_id), texts, out.shape[1] - width

    def plain(model):
        model.eval()

        def go():
            with torch.no_grad():
                return model.generate(**batch, **settings)

        secs, out = timed(go, args.repeats)
        new = out[:, width:]
        return (
            secs,
            count_tokens(new, tok.eos_token_id, tok.pad_token_id),
            tok.batch_decode(new, skip_special_tokens=True),
            new.shape[1],
        )

    results["ours, generate/chat (merged)"] = ours(persona)
    del persona
    results["ours, adapter kept (evaluate)"] = ours(load_persona(args.adapter))
    q = quantization_config("nf4", torch.float32)
    nf4 = AutoModelForCausalLM.from_pretrained(
        base_path, quantization_config=q, dtype=torch.float32, device_map={"": "cpu"}
    )
    results["transformers, NF4 base + adapter"] = plain(PeftModel.from_pretrained(nf4, args.adapter))
    del nf4
    fp32 = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    results["transformers, fp32 base + adapter"] = plain(PeftModel.from_pretrained(fp32, args.adapter))
    del fp32
    with tempfile.TemporaryDirectory() as tmp:
        export(args.adapter, f"{tmp}/merged", dtype="float32")
        results["ours, merged export"] = ours(load_persona(base_model=f"{tmp}/merged"))

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
        f"(median of {args.repeats} timed calls after a warm-up; steps: decoding steps of the batch (the longest "
        "answer); tokens: generated tokens up to each row's end of sequence; 'ours/this' is the row's time per step "
        "over ours (generate/chat): above 1 means ours is faster)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
