"""One decoding step of the serve scheduler: PEFT's mixed-batch LoRA against the stacked per-row LoRA, side by side.

    python scripts/bench_serve_step.py --registry runs/load-registry.yaml --rows 32

Loads the registry's personas as ``politician-lm serve`` does, puts ``--rows`` requests of alternating personas in
one running batch, decodes ``--warmup`` steps (the cache grows to a realistic width), then times ``--steps`` steps.
The two kinds alternate, ``--repeats`` times each, in one process with one torch thread (as the load test runs the
server); it prints each run's median step, the ratio stacked/PEFT and whether both decoded the same tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What about jobs?", "What is your plan for health care?", "How do you deal with China?", "Who are you?"]


def run(served, kind: str, rows: int, warmup: int, steps: int) -> tuple[float, list[list[int]]]:
    from politician_lm.serve.row_lora import RowAdapters
    from politician_lm.serve.sampling import RowSampler, model_defaults
    from politician_lm.serve.scheduler import DecodeBatch, Job, Row

    model, eos = served.model, served.tokenizer.eos_token_id
    batch = DecodeBatch(model, eos)
    if kind == "peft":  # PEFT's own mixed batch in every layer, as the scheduler ran it before
        batch.adapters.release()
        batch.adapters = RowAdapters(model, stacked=False)
    names, loop, defaults = list(served.personas), asyncio.new_event_loop(), model_defaults(model)
    batch_rows = []
    for i in range(rows):
        persona = served.personas[names[i % len(names)]]
        job = Job(names[i % len(names)], [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], 10**6, {}, loop)
        job.served = persona
        ids = persona.persona.prompt_ids(job.conversation)
        batch_rows.append(Row(job, persona.adapter, ids, RowSampler({}, defaults, eos, None), None, persona.prefix))
    tokens = [batch.prefill(batch_rows)]
    for _ in range(warmup):
        tokens.append(batch.step())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        tokens.append(batch.step())
        times.append(time.perf_counter() - start)
    batch.adapters.release()
    loop.close()
    return statistics.median(times), tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", default="configs/models.yaml")
    p.add_argument("--personas", default=None, help="registry names, comma-separated (default: every trained one)")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    from politician_lm.quiet import quiet_libraries
    from politician_lm.serve.personas import resolve_specs
    from politician_lm.serve.served import load_served

    quiet_libraries()
    served = load_served(resolve_specs(args.personas, str(ROOT / args.registry), None, None, False))
    medians: dict[str, list[float]] = {"peft": [], "stacked": []}
    decoded: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):
        for kind in medians:
            median, tokens = run(served, kind, args.rows, args.warmup, args.steps)
            medians[kind].append(median)
            decoded.setdefault(kind, tokens)
            print(f"{kind:8s} median step {1000 * median:.1f} ms", flush=True)
    peft, stacked = statistics.mean(medians["peft"]), statistics.mean(medians["stacked"])
    print(
        f"{args.rows} rows of {len(served.personas)} personas: PEFT {1000 * peft:.1f} ms, stacked {1000 * stacked:.1f}"
        f" ms a step, stacked/PEFT {stacked / peft:.2f}x; same tokens: {decoded['peft'] == decoded['stacked']}"
    )


if __name__ == "__main__":
    main()
