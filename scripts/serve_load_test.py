"""Acceptance and load test of ``politician-lm serve`` on real personas (default: the SmolLM2 demo adapters).

1. References: ``politician-lm generate --politician P --do_sample false --batch_size 1`` (every prompt alone), in a
   child process per persona; its peak RSS is the cost of one persona in one process. A child that loads only the
   base (same path: NF4, de-quantized once) and generates gives the base's peak RSS.
2. A server with every persona (``politician-lm serve``), checked with the official ``openai`` client: it lists the
   personas, and a streamed and a plain answer for each persona, served alone, equal the reference.
3. The load: ``--requests`` concurrent streamed requests spread over the personas, every answer compared with that
   persona's reference. Where an answer differs, the first differing token is located and the logit gap between the
   reference token and the served one (alone, after the persona's logits processors) is printed.
4. Latency p50/p95 (and time to first token), tokens/s, and the server's peak RSS (VmHWM) against the base's.

    python scripts/serve_load_test.py                       # biden + trump, 32 requests, 64 tokens, batches of 16
    python scripts/serve_load_test.py --output runs/serve-load.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What about jobs?",
    "What is your plan for health care?",
    "How would you handle inflation?",
    "What do you think about climate change?",
    "Tell me about your childhood.",
    "What is your view on immigration?",
    "How do you deal with China?",
    "What about taxes on the middle class?",
    "Who are you?",
    "What is your message to young voters?",
    "How do we fix infrastructure?",
    "What about the border?",
    "What is your view on trade deals?",
    "How do you support veterans?",
    "What about energy prices?",
    "Why should people vote for you?",
]
BASE_ONLY = """
import sys, torch
from politician_lm.model.loading import dequantize_for_inference, load_base_model
from transformers import AutoTokenizer
base = sys.argv[1]
model = dequantize_for_inference(load_base_model(base, "nf4", torch.float32, torch.device("cpu"))).eval()
tok = AutoTokenizer.from_pretrained(base)
ids = tok("What about jobs?", return_tensors="pt")
with torch.no_grad():
    model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
"""


def child_peak_rss_mb(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``cmd``; its own peak RSS (ru_maxrss from wait4, this child only)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    out_text: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda s=s, n=n: out_text.__setitem__(n, s.read()))
        for s, n in ((proc.stdout, "out"), (proc.stderr, "err"))
    ]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out_text.get("out", ""), out_text.get("err", ""))
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed:\n{done.stderr[-3000:]}")
    return usage.ru_maxrss / 1024, done


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def references(persona: str, args, tmp: Path, env: dict) -> tuple[list[str], float]:
    prompts = tmp / f"{persona}.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    out = tmp / f"{persona}-ref.jsonl"
    rss, _ = child_peak_rss_mb(
        [
            sys.executable,
            "-m",
            "politician_lm.cli",
            "generate",
            "--politician",
            persona,
            "--registry",
            args.registry,
            "--prompts_file",
            str(prompts),
            "--do_sample",
            "false",
            "--max_new_tokens",
            str(args.max_tokens),
            "--batch_size",
            "1",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        env=env,
    )
    from politician_lm.artifacts.roles import strip_reply_label

    return [strip_reply_label(json.loads(line)["generation"]) for line in out.read_text().splitlines()], rss


def logit_gap(persona_name: str, question: str, reference: str, served: str, args) -> dict:
    """The first token where ``served`` leaves ``reference``: the reference token, the served token, and the gap
    between their scores when the prompt runs alone (after the persona's logits processors, as greedy sees them)."""
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    from politician_lm.commands.generate import resolve_persona

    persona = _persona_cache.get(persona_name)
    if persona is None:
        persona = _persona_cache[persona_name] = resolve_persona(
            None, None, None, persona_name, args.registry, None, False
        )
    conv = [{"role": "user", "content": question}]
    prompt = persona.prompt_ids(conv)
    tok = persona.tokenizer
    with torch.no_grad():
        out = persona.model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=args.max_tokens,
            do_sample=False,
            repetition_penalty=persona.generation.get("repetition_penalty"),
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ref_ids = out[0, len(prompt) :].tolist()
    k = next(
        (
            i
            for i in range(len(ref_ids))
            if not served.startswith(tok.decode(ref_ids[: i + 1], skip_special_tokens=True).lstrip())
        ),
        len(ref_ids),
    )
    ids = torch.tensor([prompt + ref_ids[:k]])
    with torch.no_grad():
        scores = persona.model(input_ids=ids).logits[:, -1].float()
    if persona.generation.get("repetition_penalty"):
        scores = RepetitionPenaltyLogitsProcessor(persona.generation["repetition_penalty"])(ids, scores)
    top = torch.topk(scores[0], 10)
    prefix = tok.decode(ref_ids[:k], skip_special_tokens=True).lstrip()
    served_tok = next(
        (
            int(t)
            for t in top.indices[1:]
            if served.startswith(tok.decode(ref_ids[:k] + [int(t)], skip_special_tokens=True).lstrip())
        ),
        None,
    )
    ref_tok = ref_ids[k] if k < len(ref_ids) else None
    gap = float(scores[0, ref_tok] - scores[0, served_tok]) if ref_tok is not None and served_tok is not None else None
    return {
        "persona": persona_name,
        "question": question,
        "position": k,
        "prefix_tail": prefix[-40:],
        "reference_token": tok.decode([ref_tok]) if ref_tok is not None else None,
        "served_token": tok.decode([served_tok]) if served_tok is not None else None,
        "logit_gap": gap,
        "top1_top2_gap": float(top.values[0] - top.values[1]),
    }


_persona_cache: dict = {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--personas", default="biden,trump")
    p.add_argument("--registry", default="configs/models.yaml")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--max_batch_size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads of every process (OMP_NUM_THREADS)")
    p.add_argument("--output", help="also write the numbers as JSON here")
    p.add_argument("--cache", help="folder keeping the references and their RSS between runs (they are deterministic)")
    args = p.parse_args()
    os.chdir(ROOT)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from openai import OpenAI

    personas = args.personas.split(",")
    report: dict = {
        "personas": personas,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "max_batch_size": args.max_batch_size,
        "threads": args.threads,
    }
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))

    # 1. references and the one-process costs
    # every process runs under the allocator `politician-lm` picks (tcmalloc where installed), so RSS compares
    from politician_lm.allocator import environment
    from politician_lm.artifacts.registry import registry_entry

    env = environment()
    report["allocator"] = "tcmalloc" if "tcmalloc" in env.get("LD_PRELOAD", "") else "system"
    base = registry_entry(personas[0], args.registry)["base_model"]
    report["base_only_peak_rss_mb"], _ = child_peak_rss_mb([sys.executable, "-c", BASE_ONLY, base], cwd=ROOT, env=env)
    refs, report["generate_peak_rss_mb"] = {}, {}
    for name in personas:
        cached = Path(args.cache) / f"{name}-{args.max_tokens}.json" if args.cache else None
        if cached and cached.is_file():  # texts only: greedy answers do not depend on the allocator
            refs[name] = json.loads(cached.read_text())[0]
        else:
            t0 = time.monotonic()
            refs[name], _ = references(name, args, tmp, env)
            print(
                f"references for {name}: {len(refs[name])} prompts alone in {time.monotonic() - t0:.0f} s", flush=True
            )
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps([refs[name], None]))
        report["generate_peak_rss_mb"][name], _ = child_peak_rss_mb(
            [
                sys.executable,
                "-m",
                "politician_lm.cli",
                "generate",
                "--politician",
                name,
                "--registry",
                args.registry,
                "--prompt",
                QUESTIONS[0],
                "--do_sample",
                "false",
                "--max_new_tokens",
                str(args.max_tokens),
            ],
            cwd=ROOT,
            env=env,
        )

    # 2. the server (first with one persona, for its memory after loading, then with all of them)
    import httpx

    def start(names: str) -> tuple[subprocess.Popen, str, float]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = open(tmp / "server.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "politician_lm.cli",
                "serve",
                "--personas",
                names,
                "--registry",
                args.registry,
                "--port",
                str(port),
                "--max_batch_size",
                str(args.max_batch_size),
                "--max_pending",
                str(max(64, args.requests)),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        url, t0 = f"http://127.0.0.1:{port}", time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit("server exited:\n" + (tmp / "server.log").read_text()[-3000:])
            try:
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    return proc, url, time.monotonic() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def stop(proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    server, url, _ = start(personas[0])
    report["one_persona_server_rss_after_load_mb"] = httpx.get(url + "/health").json()["peak_rss_mb"]
    stop(server)
    server, url, ready_s = start(args.personas)
    try:
        report["server_ready_s"] = round(ready_s, 1)
        report["server_rss_after_load_mb"] = httpx.get(url + "/health").json()["peak_rss_mb"]
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)

        listed = sorted(m.id for m in client.models.list().data)
        print(f"models: {listed}")
        assert listed == sorted(personas), listed
        alone = {}
        for name in personas:
            msgs = [{"role": "user", "content": QUESTIONS[0]}]
            plain = client.chat.completions.create(model=name, messages=msgs, temperature=0, max_tokens=args.max_tokens)
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model=name, messages=msgs, temperature=0, max_tokens=args.max_tokens, stream=True
                )
                if c.choices
            )
            alone[name] = {
                "plain_equal": plain.choices[0].message.content == refs[name][0],
                "streamed_equal": streamed == refs[name][0],
            }
            print(
                f"{name} alone: plain == generate: {alone[name]['plain_equal']}, streamed == generate: "
                f"{alone[name]['streamed_equal']}  ({plain.choices[0].message.content[:70]!r}...)"
            )
        report["alone_equal_generate"] = alone

        # 3. the load
        jobs = [(personas[i % len(personas)], (i // len(personas)) % len(QUESTIONS)) for i in range(args.requests)]
        start_gate = threading.Barrier(len(jobs))

        def ask(job):
            name, q = job
            start_gate.wait()
            t_start = time.monotonic()
            first, pieces, usage = None, [], None
            for c in client.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": QUESTIONS[q]}],
                temperature=0,
                max_tokens=args.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            ):
                if c.usage:
                    usage = c.usage
                if c.choices and c.choices[0].delta.content:
                    first = first or time.monotonic()
                    pieces.append(c.choices[0].delta.content)
            end = time.monotonic()
            return {
                "persona": name,
                "q": q,
                "text": "".join(pieces),
                "latency": end - t_start,
                "ttft": (first or end) - t_start,
                "tokens": usage.completion_tokens,
                "start": t_start,
                "end": end,
            }

        before = httpx.get(url + "/health").json()["engine"]
        paused, loading = [], True

        def watch() -> None:  # a stopped server (SIGSTOP, e.g. by a benchmark sharing the machine) spoils the timings
            while loading:
                with open(f"/proc/{server.pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                        paused.append(time.monotonic())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(ask, jobs))
        loading = False
        report["server_stopped_during_load"] = bool(paused)
        after = httpx.get(url + "/health").json()
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
        tokens = sum(r["tokens"] for r in results)
        lat, ttft = [r["latency"] for r in results], [r["ttft"] for r in results]
        mismatches = [r for r in results if r["text"] != refs[r["persona"]][r["q"]]]
        cross = [
            r for r in mismatches for other in personas if other != r["persona"] and r["text"] == refs[other][r["q"]]
        ]
        batches = after["engine"]["batches"] - before["batches"]
        report.update(
            {
                "load_correct": len(results) - len(mismatches),
                "load_total": len(results),
                "answers_equal_to_another_persona": len(cross),
                "latency_p50_s": round(pct(lat, 50), 2),
                "latency_p95_s": round(pct(lat, 95), 2),
                "ttft_p50_s": round(pct(ttft, 50), 2),
                "ttft_p95_s": round(pct(ttft, 95), 2),
                "wall_s": round(wall, 2),
                "completion_tokens": tokens,
                "tokens_per_s": round(tokens / wall, 1),
                "batches": batches,
                "rows_per_batch": round(len(results) / max(batches, 1), 1),
                "server_peak_rss_mb": after["peak_rss_mb"],
            }
        )
    finally:
        stop(server)

    # 4. near ties where batching changed a token
    report["mismatches"] = [
        logit_gap(r["persona"], QUESTIONS[r["q"]], refs[r["persona"]][r["q"]], r["text"], args) for r in mismatches
    ]
    base_rss = report["base_only_peak_rss_mb"]
    one = max(report["generate_peak_rss_mb"].values())
    print()
    print(
        f"load: {args.requests} concurrent streamed requests over {', '.join(personas)}, greedy, "
        f"max_tokens {args.max_tokens}, batches of up to {args.max_batch_size}, {args.threads} torch thread(s)"
    )
    print(
        f"  correct (equal to that persona's `generate` answer alone): {report['load_correct']}/{report['load_total']};"
        f" equal to another persona's answer: {report['answers_equal_to_another_persona']}"
    )
    print(
        f"  latency p50 {report['latency_p50_s']} s, p95 {report['latency_p95_s']} s; first token p50 "
        f"{report['ttft_p50_s']} s, p95 {report['ttft_p95_s']} s"
    )
    print(
        f"  {tokens} tokens in {report['wall_s']} s = {report['tokens_per_s']} tokens/s "
        f"({report['batches']} batches, {report['rows_per_batch']} rows each on average)"
    )
    print(
        f"peak RSS ({report['allocator']} malloc in every process): base alone {base_rss:.0f} MB; "
        f"`generate` with one persona, one prompt {one:.0f} MB; server with "
        f"{len(personas)} personas {report['server_peak_rss_mb']:.0f} MB under the load, "
        f"+{report['server_peak_rss_mb'] - base_rss:.0f} MB over the base"
    )
    print(
        f"  after loading: server with {personas[0]} only {report['one_persona_server_rss_after_load_mb']:.0f} MB, "
        f"with {len(personas)} personas {report['server_rss_after_load_mb']:.0f} MB"
    )
    if report["server_stopped_during_load"]:
        print("  WARNING: the server process was stopped (SIGSTOP) during the load; these timings are not valid")
    for m in report["mismatches"]:
        print(
            f"  differs: {m['persona']} {m['question']!r} at token {m['position']} (after ...{m['prefix_tail']!r}): "
            f"reference {m['reference_token']!r}, served {m['served_token']!r}, logit gap alone "
            f"{m['logit_gap'] if m['logit_gap'] is None else round(m['logit_gap'], 4)}"
        )
    if args.output:
        from politician_lm.artifacts.atomic import atomic_write_text

        atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
