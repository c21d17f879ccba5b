"""Load test of ``politician-lm serve`` against an anchor, side by side in one run (issue 26, item 6).

Three servers get the same requests (streamed, greedy, arrival times spread evenly over ``--spread`` seconds, the
personas taking turns), one load size at a time (``--requests 32,128``), each on a fresh server:

* ``before``: ``politician-lm serve`` at git revision ``--before`` (default: the commit before continuous batching
  came in), run from a git worktree of that revision;
* ``after``: ``politician-lm serve`` of this checkout;
* ``transformers``: ``transformers serve --continuous-batching`` on the merged export (``politician-lm export``) of
  the first persona; it holds one model, so every request goes to it, with that persona's system prompt sent as a
  system message (so its prompts have the tokens ours have). Its paged KV cache is sized from the free memory
  unless ``--transformers_args '--cb-num-blocks N'`` says otherwise, and its peak RSS shows that.

Reported per server and load: tokens/s over the load's wall time, first-token and total latency p50/p95, peak RSS
(VmHWM of the server's processes), and for ours how many answers equal ``politician-lm generate --do_sample false
--batch_size 1`` for their persona (computed first, every prompt alone), with the logit gap at the first token that
differs (``after`` only). Also each of our servers' RSS after loading one persona and three (the two and a 50/50
mix of them), the target being at most 1.1x. One table, then the ratios after/before and after/transformers.

    python scripts/serve_load_test.py                                  # biden + trump, 32 and 128 requests
    python scripts/serve_load_test.py --before 4cb77c4 --output runs/serve-load.json
    python scripts/serve_load_test.py --servers after --requests 2     # a quick check of this checkout only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

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
SERVERS = ("before", "after", "transformers")


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:5]))}... failed:\n{done.stderr[-3000:]}")
    return done


def tree_peak_rss_mb(pid: int) -> float:
    """VmHWM summed over ``pid`` and its descendants (a server may run helper processes)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return round(total, 1)


def absolute_registry(args, tmp: Path) -> tuple[Path, list[str]]:
    """The personas' registry entries with absolute paths (a worktree runs elsewhere), plus a third persona, a
    50/50 mix of the first two, for the memory check; returns the file and the three names."""
    from politician_lm.artifacts.registry import registry_entry

    entries, names = {}, args.personas.split(",")
    for name in names:
        entry = dict(registry_entry(name, args.registry))
        if Path(entry.get("base_model", "")).exists():
            entry["base_model"] = str(Path(entry["base_model"]).resolve())
        entry["adapters"] = [{**a, "path": str(Path(a["path"]).resolve())} for a in entry["adapters"]]
        entries[name] = entry
    mix = f"{names[0]}-{names[1]}-mix"
    entries[mix] = {
        **entries[names[0]],
        "adapters": [{"path": entries[n]["adapters"][0]["path"], "weight": 0.5} for n in names[:2]],
    }
    path = tmp / "registry.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path, [*names[:2], mix]


def asked(persona: str, question: str, registry: Path) -> str:
    """The user turn as the server renders it (``USER:``-labelled for a plain-format persona, as in training)."""
    from politician_lm.artifacts.adapter import read_metadata
    from politician_lm.artifacts.roles import user_turn

    adapter = yaml.safe_load(registry.read_text())[persona]["adapters"][0]["path"]
    return user_turn(question, read_metadata(adapter).get("prompt_format", "plain"))["content"]


def references(persona: str, registry: Path, args, tmp: Path, env: dict) -> list[str]:
    """``generate``'s greedy answer to every question, each prompt alone (cached in ``--cache``)."""
    from politician_lm.artifacts.roles import strip_reply_label

    cached = Path(args.cache) / f"{persona}-{args.max_tokens}.json" if args.cache else None
    if cached and cached.is_file():
        return json.loads(cached.read_text())[0]
    prompts, out = tmp / f"{persona}.jsonl", tmp / f"{persona}-ref.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": asked(persona, q, registry)}) + "\n" for q in QUESTIONS))
    t0 = time.monotonic()
    run(
        [sys.executable, "-m", "politician_lm.cli", "generate", "--politician", persona, "--registry", str(registry)]
        + ["--prompts_file", str(prompts), "--do_sample", "false", "--max_new_tokens", str(args.max_tokens)]
        + ["--batch_size", "1", "--output", str(out)],
        cwd=ROOT,
        env=env,
    )
    refs = [strip_reply_label(json.loads(line)["generation"]) for line in out.read_text().splitlines()]
    print(f"references for {persona}: {len(refs)} prompts alone in {time.monotonic() - t0:.0f} s", flush=True)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps([refs, None]))
    return refs


class Server:
    """One server process: ours (``serve`` from a checkout) or ``transformers serve``; ready once it answers."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict, log: Path, ready_path: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url, self.log = f"http://127.0.0.1:{self.port}", log
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port)], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT
            )
        import httpx

        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({' '.join(cmd[:4])}):\n" + log.read_text()[-3000:])
            try:
                if httpx.get(self.url + ready_path, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > 900:
                self.stop()
                raise SystemExit("server not ready in 900 s:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        self.ready_s = round(time.monotonic() - t0, 1)

    def peak_rss_mb(self) -> float:
        return tree_peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ours(checkout: Path, personas: list[str], registry: Path, args, env: dict, log: Path) -> Server:
    cmd = [sys.executable, "-m", "politician_lm.cli", "serve", "--personas", ",".join(personas)]
    cmd += ["--registry", str(registry), "--max_batch_size", str(args.max_batch_size)]
    cmd += ["--max_pending", str(max(64, max(args.sizes))), "--max_tokens", str(max(args.max_tokens, 512))]
    return Server(cmd, checkout, {**env, "PYTHONPATH": str(checkout)}, log, "/ready")


def transformers_server(export: Path, args, env: dict, log: Path) -> Server:
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe), "serve", str(export), "--continuous-batching", "--device", "cpu", "--log-level", "warning"]
    return Server([*cmd, *shlex.split(args.transformers_args)], ROOT, env, log, "/v1/models")


def load(server: Server, model: dict[str, str], system: dict[str, str | None], size: int, args) -> list[dict]:
    """``size`` streamed greedy requests, personas in turn, the i-th sent at ``i * spread / (size - 1)`` s."""
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=3600)
    names = list(model)
    jobs = [(names[i % len(names)], (i // len(names)) % len(QUESTIONS)) for i in range(size)]
    start, results = time.monotonic() + 0.5, [None] * size

    def ask(i: int) -> None:
        persona, q = jobs[i]
        time.sleep(max(0.0, start + i * args.spread / max(size - 1, 1) - time.monotonic()))
        messages = [{"role": "user", "content": QUESTIONS[q]}]
        if system.get(persona):
            messages.insert(0, {"role": "system", "content": system[persona]})
        t0, first, pieces, usage = time.monotonic(), None, [], None
        for c in client.chat.completions.create(
            model=model[persona],
            messages=messages,
            temperature=0,
            max_tokens=args.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        ):
            usage = c.usage or usage
            if c.choices and c.choices[0].delta.content:
                first = first or time.monotonic()
                pieces.append(c.choices[0].delta.content)
        end = time.monotonic()
        results[i] = {"persona": persona, "q": q, "text": "".join(pieces), "start": t0, "end": end}
        results[i].update(ttft=(first or end) - t0, latency=end - t0, tokens=usage.completion_tokens if usage else 0)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(results: list[dict], refs: dict[str, list[str]] | None) -> dict:
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    lat, ttft = [r["latency"] for r in results], [r["ttft"] for r in results]
    out = {
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_s": round(pct(ttft, 50), 2),
        "ttft_p95_s": round(pct(ttft, 95), 2),
        "latency_p50_s": round(pct(lat, 50), 2),
        "latency_p95_s": round(pct(lat, 95), 2),
    }
    if refs is not None:
        out["equal_to_generate"] = sum(r["text"] == refs[r["persona"]][r["q"]] for r in results)
    return out


def logit_gap(persona_name: str, question: str, reference: str, served: str, registry: Path, args) -> dict:
    """The first token where ``served`` leaves ``reference``, and the gap between the scores of the reference token
    and the served one when the prompt runs alone (after the persona's repetition penalty, as greedy sees them)."""
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    from politician_lm.artifacts.roles import strip_reply_label
    from politician_lm.commands.generate import resolve_persona

    persona = _personas.get(persona_name) or _personas.setdefault(
        persona_name, resolve_persona(None, None, None, persona_name, str(registry), None, False)
    )
    prompt = persona.prompt_ids([{"role": "user", "content": asked(persona_name, question, registry)}])
    tok = persona.tokenizer
    penalty = persona.generation.get("repetition_penalty")
    with torch.no_grad():
        out = persona.model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=args.max_tokens,
            do_sample=False,
            repetition_penalty=penalty,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ref_ids = out[0, len(prompt) :].tolist()

    def text(ids: list[int]) -> str:
        return strip_reply_label(tok.decode(ids, skip_special_tokens=True)).lstrip()

    decoded = [text(ref_ids[: i + 1]) for i in range(len(ref_ids))]
    k = next((i for i, text in enumerate(decoded) if not served.startswith(text)), len(ref_ids))
    ids = torch.tensor([prompt + ref_ids[:k]])
    with torch.no_grad():
        scores = persona.model(input_ids=ids).logits[:, -1].float()
    if penalty:
        scores = RepetitionPenaltyLogitsProcessor(penalty)(ids, scores)
    top = torch.topk(scores[0], 10)
    served_tok = next(
        (int(t) for t in top.indices[1:] if served.startswith(text(ref_ids[:k] + [int(t)]))),
        None,
    )
    ref_tok = ref_ids[k] if k < len(ref_ids) else None
    gap = float(scores[0, ref_tok] - scores[0, served_tok]) if ref_tok is not None and served_tok is not None else None
    return {
        "persona": persona_name,
        "question": question,
        "position": k,
        "reference_token": tok.decode([ref_tok]) if ref_tok is not None else None,
        "served_token": tok.decode([served_tok]) if served_tok is not None else None,
        "logit_gap": gap,
        "reference_regenerated": text(ref_ids) == reference,  # False: the scores above are not the reference's
        "reference": reference[:120],
        "served": served[:120],
    }


_personas: dict = {}


def before_revision() -> str:
    """The commit before the one that brought continuous batching (serve/scheduler.py)."""
    added = run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "politician_lm/serve/scheduler.py"], cwd=ROOT
    ).stdout.split()
    if not added:
        raise SystemExit("no commit adds politician_lm/serve/scheduler.py here; pass --before REV")
    return added[-1] + "~1"


def engine_time(server: Server) -> dict | None:
    """The model thread's prefill and decoding time over the server's life (None where the server has no counters:
    older revisions), from its ``/health``."""
    import httpx

    engine = httpx.get(server.url + "/health", timeout=30).json().get("engine") or {}
    keys = ("prefills", "prefill_seconds", "steps", "step_seconds")
    return {k: engine[k] for k in keys} if all(k in engine for k in keys) else None


def server_threads(spec: str, servers: list[str]) -> dict[str, int]:
    """``--threads``: N for every server, or ``before=1,after=2`` (a server not named gets 1)."""
    if "=" not in spec:
        return dict.fromkeys(servers, int(spec))
    named = {k.strip(): int(v) for k, v in (part.split("=") for part in spec.split(","))}
    unknown = set(named) - set(SERVERS)
    if unknown:
        raise SystemExit(f"--threads names {', '.join(sorted(unknown))}; the servers are {', '.join(SERVERS)}")
    return {s: named.get(s, 1) for s in servers}


def measure_ours(label: str, checkout: Path, ctx: dict, args) -> dict:
    """One of our servers: RSS with one persona and with three, then a fresh server per load size."""
    names, registry, tmp = ctx["names"], ctx["registry"], ctx["tmp"]
    env = {**ctx["env"], "OMP_NUM_THREADS": str(ctx["threads"][label])}
    report: dict = {}
    for count in (1, 3):
        server = ours(checkout, names[:count], registry, args, env, tmp / f"{label}-rss{count}.log")
        report[f"rss_{count}_personas_mb"] = server.peak_rss_mb()
        server.stop()
    for size in args.sizes:
        server = ours(checkout, names[:2], registry, args, env, tmp / f"{label}-{size}.log")
        try:
            load(server, {n: n for n in names[:2]}, {}, 2, args)  # warm-up: every persona once
            warm = engine_time(server)
            results = load(server, {n: n for n in names[:2]}, {}, size, args)
            report[size] = {**summary(results, ctx["refs"]), "peak_rss_mb": server.peak_rss_mb()}
            done = engine_time(server)
            report[size]["engine"] = {k: round(done[k] - warm[k], 2) for k in done} if warm and done else None
            report[size]["differs"] = [r for r in results if r["text"] != ctx["refs"][r["persona"]][r["q"]]]
        finally:
            server.stop()
        print(f"{label} {size}: {json.dumps({k: v for k, v in report[size].items() if k != 'differs'})}", flush=True)
    return report


def measure_transformers(ctx: dict, args) -> dict:
    from politician_lm.artifacts.adapter import read_metadata

    first = ctx["names"][0]
    adapter = yaml.safe_load(ctx["registry"].read_text())[first]["adapters"][0]["path"]
    export = Path(args.cache or ctx["tmp"]) / f"{first}-merged"
    if not export.is_dir():
        cmd = [sys.executable, "-m", "politician_lm.cli", "export", "--adapter", adapter, "--output_dir", str(export)]
        run(cmd, cwd=ROOT, env=ctx["env"])
    system = read_metadata(adapter).get("system_prompt")
    report: dict = {}
    for size in args.sizes:
        env = {**ctx["env"], "OMP_NUM_THREADS": str(ctx["threads"]["transformers"])}
        server = transformers_server(export, args, env, ctx["tmp"] / f"transformers-{size}.log")
        try:
            model = {n: str(export) for n in ctx["names"][:2]}  # one model holds every request
            load(server, model, dict.fromkeys(model, system), 2, args)
            report[size] = {**summary(load(server, model, dict.fromkeys(model, system), size, args), None)}
            report[size]["peak_rss_mb"] = server.peak_rss_mb()
        finally:
            server.stop()
        print(f"transformers {size}: {json.dumps(report[size])}", flush=True)
    return report


ROWS = [
    ("tokens/s", "tokens_per_s"),
    ("first token p50 (s)", "ttft_p50_s"),
    ("first token p95 (s)", "ttft_p95_s"),
    ("latency p50 (s)", "latency_p50_s"),
    ("latency p95 (s)", "latency_p95_s"),
    ("peak RSS (MB)", "peak_rss_mb"),
    ("equal to generate", "equal_to_generate"),
]


def table(report: dict, args) -> str:
    servers = [s for s in SERVERS if s in report]
    head = ["", *servers]
    if {"before", "after"} <= set(servers):
        head.append("after/before")
    if {"transformers", "after"} <= set(servers):
        head.append("after/transformers")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ratio(a, b) -> str:
        return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else ""

    for size in args.sizes:
        lines.append(f"| **{size} requests** |" + " |" * (len(head) - 1))
        for label, key in ROWS:
            cells = [report[s][size].get(key, "n/a") for s in servers]
            if key == "equal_to_generate":
                cells = [f"{c}/{size}" if c != "n/a" else c for c in cells]
            row = [label, *map(str, cells)]
            for other in ("before", "transformers"):
                if f"after/{other}" in head:
                    a, b = report["after"][size].get(key), report[other][size].get(key)
                    row.append("" if key == "equal_to_generate" else ratio(a, b))
            lines.append("| " + " | ".join(row) + " |")
    for s in ("before", "after"):
        for size in args.sizes:
            if s in report and (e := report[s][size].get("engine")):
                lines.append(
                    f"\n{s}, {size} requests: {e['prefills']} prefill forwards took "
                    f"{e['prefill_seconds']} s, {e['steps']} decoding steps {e['step_seconds']} s"
                )
    for s in ("before", "after"):
        if s in report:
            one, three = report[s]["rss_1_personas_mb"], report[s]["rss_3_personas_mb"]
            rss = f"RSS after loading one persona {one:.0f} MB, three {three:.0f} MB ({three / one:.2f}x)"
            lines.append(f"\n{s}: {rss}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--personas", default="biden,trump", help="two registry personas")
    p.add_argument("--registry", default="configs/models.yaml")
    p.add_argument("--requests", default="32,128", help="load sizes, each on a fresh server")
    p.add_argument("--spread", type=float, default=4.0, help="seconds over which the requests of a load arrive")
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--max_batch_size", type=int, default=16)
    p.add_argument(
        "--threads",
        default="1",
        help="torch threads (OMP_NUM_THREADS) of every server, N, or per server as before=1,after=2 (servers not "
        "named get 1), so that each can run at its fastest setting. The references (generate) get 1",
    )
    p.add_argument("--before", help="git revision of the 'before' server (default: before continuous batching)")
    p.add_argument("--servers", default=",".join(SERVERS), help="which of before,after,transformers to run")
    p.add_argument(
        "--transformers_args",
        default="",
        help="more options of `transformers serve` (e.g. '--cb-num-blocks 512': by default its paged KV cache takes a "
        "share of the free memory, which its peak RSS then shows)",
    )
    p.add_argument("--output", help="also write the numbers as JSON here")
    p.add_argument("--cache", help="folder keeping the references and the merged export between runs")
    args = p.parse_args()
    args.sizes = [int(n) for n in args.requests.split(",")]
    servers = args.servers.split(",")
    threads = server_threads(args.threads, servers)
    os.chdir(ROOT)
    from politician_lm.allocator import environment

    env = {**environment(), "OMP_NUM_THREADS": "1"}  # the allocator politician-lm picks, everywhere
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    registry, names = absolute_registry(args, tmp)
    refs = {n: references(n, registry, args, tmp, env) for n in names[:2]}
    ctx = {"names": names, "registry": registry, "env": env, "tmp": tmp, "refs": refs, "threads": threads}
    report: dict = {"personas": names[:2], "sizes": args.sizes, "spread_s": args.spread, "max_tokens": args.max_tokens}
    report["max_batch_size"], report["threads"] = args.max_batch_size, threads
    if "before" in servers:
        rev = args.before or before_revision()
        worktree = tmp / "before"
        run(["git", "worktree", "add", "--detach", str(worktree), rev], cwd=ROOT)
        try:
            report["before_revision"] = run(["git", "rev-parse", "HEAD"], cwd=worktree).stdout.strip()
            report["before"] = measure_ours("before", worktree, ctx, args)
        finally:
            run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT)
    if "after" in servers:
        report["after"] = measure_ours("after", ROOT, ctx, args)
    if "transformers" in servers:
        report["transformers"] = measure_transformers(ctx, args)
    print()
    print(
        f"{', '.join(names[:2])}; {args.max_tokens} new tokens, greedy; arrivals over {args.spread:g} s; batches of up "
        f"to {args.max_batch_size}; torch threads {', '.join(f'{s} {n}' for s, n in threads.items())}; transformers: "
        f"{names[0]} only"
    )
    print(table(report, args))
    if "after" in report:
        for size in args.sizes:
            report["after"][size]["differs"] = [
                logit_gap(r["persona"], QUESTIONS[r["q"]], refs[r["persona"]][r["q"]], r["text"], registry, args)
                for r in report["after"][size]["differs"]
            ]
            for m in report["after"][size]["differs"]:
                print(f"  after {size}: differs {m}")
    for s in ("before",):
        for size in args.sizes:
            report.get(s, {}).get(size, {}).pop("differs", None)
    if args.output:
        from politician_lm.artifacts.atomic import atomic_write_text

        atomic_write_text(args.output, json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
