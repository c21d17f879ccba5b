"""``politician-lm evaluate`` before and after: wall time and peak RSS of the same evaluation, side by side in one run,
and whether the two wrote the same metrics.

    python scripts/bench_evaluate.py                                   # runs/sotu-biden/adapters/best, 290 records
    python scripts/bench_evaluate.py --before 889373b --records 290 --repeats 1

"Before" is the package at ``--before`` (default: the commit the fast-evaluate issue was filed against), checked out
into a temporary git worktree; "after" is this checkout. Both run as separate processes on the same inputs, one after
the other (alternating when ``--repeats`` > 1), each with an empty cache folder (``XDG_CACHE_HOME``) so neither
reuses the other's generic texts or style classifier, and from the same working folder (whose ``data`` is the "before"
worktree's), so both read the same profiles, identity probes and style records whatever this checkout has changed
since. Peak RSS is
the child process's ``ru_maxrss`` (``os.wait4``).

The fixed held-out set: the first ``--records`` records of the adapter's prepared data, its held-out address first
(``val.jsonl``), then training records to make up the number (which of them the adapter saw does not matter to a
before/after timing). They are written as the ``val.jsonl`` of a temporary folder whose ``train.jsonl`` is the rest,
without ``stats.json``; the adapter is copied without its recorded document split, so both versions score exactly
that ``val.jsonl``. Both run with the ``records`` style judge (the only one "before" has) and ``--max_heldout`` off.
Both load the adapter's own base model (its ``politician_lm.json``: the folder recorded at export, else its name as a
folder under this checkout, else a hub id), or ``--base_model``.

Metrics compared: every number both versions write (``arms`` and ``differences``: value and interval; the
confusion matrix); held-out losses to a relative 1e-4 (the old pass took its cross-entropy along a strided
vocabulary dimension, ~4e-5 off; see tests/test_completion_losses.py), everything else exactly. Run it on an
otherwise idle machine: at 290 records on 2 CPU cores "before" takes about 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISSUE_COMMIT = "889373b"  # main when the fast-evaluate issue was filed


def fixed_data(adapter: Path, data: Path, n: int, folder: Path) -> tuple[Path, Path]:
    """``(adapter copy without its split, data folder)`` holding the first ``n`` records as ``val.jsonl``."""
    rows = (data / "val.jsonl").read_text().splitlines() + (data / "train.jsonl").read_text().splitlines()
    if len(rows) <= n:
        sys.exit(f"{data}: {len(rows)} records; --records must be below that")
    out = folder / "data"
    out.mkdir()
    (out / "val.jsonl").write_text("\n".join(rows[:n]) + "\n")
    (out / "train.jsonl").write_text("\n".join(rows[n:]) + "\n")
    copy = folder / "adapter"
    shutil.copytree(adapter, copy)
    meta = json.loads((copy / "politician_lm.json").read_text())
    meta.pop("split", None)
    (copy / "politician_lm.json").write_text(json.dumps(meta, indent=2))
    return copy, out


def base_model(adapter: Path, explicit: str | None) -> str:
    """``explicit``, else the adapter's base: its recorded absolute folder while it exists, else the name it was
    trained with, as a folder under this checkout (absolute: both versions run from a temporary folder) or a hub id."""
    if explicit:
        return str((ROOT / explicit).resolve()) if (ROOT / explicit).is_dir() else explicit
    meta = json.loads((adapter / "politician_lm.json").read_text())
    saved, name = meta.get("base_model_path"), meta.get("base_model")
    if saved and Path(saved).is_dir():
        return saved
    if name and (ROOT / name).is_dir():
        return str((ROOT / name).resolve())
    if not name or saved or name.startswith((".", "/")):  # a folder that is not there
        sys.exit(f"{adapter}: its base model {saved or name!r} is not here; pass --base_model with where it is")
    return name  # a hub id


def checked_inputs(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """``(adapter, data folder, base model)`` from the command line, or exit with one line before any work."""
    adapter = (ROOT / args.adapter).resolve()
    if not (adapter / "politician_lm.json").is_file():
        sys.exit(f"{adapter}: not an adapter folder politician-lm wrote (no politician_lm.json); check --adapter")
    if args.data is None:
        if not (adapter / "training_config.yaml").is_file():
            sys.exit(f"{adapter}: no training_config.yaml to find its data in; pass --data")
        import yaml

        config = yaml.safe_load((adapter / "training_config.yaml").read_text()) or {}
        args.data = (config.get("data") or {}).get("data_path")
        if not args.data:
            sys.exit(f"{adapter}: its training_config.yaml records no data.data_path; pass --data")
    data = (ROOT / args.data).resolve()
    for name in ("val.jsonl", "train.jsonl"):
        if not (data / name).is_file():
            sys.exit(f"{data}: no {name}; --data takes a folder `politician-lm prepare` wrote")
    for flag in ("records", "repeats", "num_prompts"):
        if getattr(args, flag) < 1:
            sys.exit(f"--{flag} must be 1 or more (got {getattr(args, flag)})")
    return adapter, data, base_model(adapter, args.base_model)


def run(name: str, tree: Path, cwd: Path, args: list[str], out: Path, cache: Path) -> dict:
    """One evaluate in a child process with ``tree``'s package first on the path: wall s, peak RSS GB, metrics."""
    code = (  # not the working folder's package (python -c puts it first on the path): ``tree``'s, checked
        "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; import politician_lm; "
        f"assert politician_lm.__file__.startswith({str(tree)!r}), politician_lm.__file__; "
        "from politician_lm.cli import main; sys.argv[0] = 'politician-lm'; sys.exit(main())"
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "XDG_CACHE_HOME": str(cache), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", code, "evaluate", *args, "--output_dir", str(out)]
    print(f"[{name}] {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"[{name}] evaluate failed (exit {os.waitstatus_to_exitcode(status)})")
    return {
        "wall_s": wall,
        "peak_rss_gb": usage.ru_maxrss / 2**20,
        "metrics": json.loads((out / "metrics.json").read_text()),
    }


def differences(before: dict, after: dict) -> list[str]:
    """Numbers both wrote that differ (losses beyond a relative 1e-4, anything else at all)."""
    found = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a.keys() & b.keys():
                walk(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
            tol = 1e-4 if "loss" in path else 0.0
            if not math.isclose(a, b, rel_tol=tol, abs_tol=tol * 1e-2):
                found.append(f"{path}: {a} vs {b}")
        elif a != b:
            found.append(f"{path}: {a!r} vs {b!r}")

    for key in ("arms", "differences", "confusion"):
        walk(before.get(key, {}), after.get(key, {}), key)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="runs/sotu-biden/adapters/best", help="adapter folder to evaluate")
    parser.add_argument("--data", default=None, help="its prepared data folder (default: from training_config.yaml)")
    parser.add_argument("--base_model", default=None, help="base model (default: the adapter's, from its metadata)")
    parser.add_argument("--before", default=ISSUE_COMMIT, help="commit whose evaluate is 'before'")
    parser.add_argument("--records", type=int, default=290, help="held-out records whose loss is computed")
    parser.add_argument("--num_prompts", type=int, default=60, help="held-out prompts generated for")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each version, alternating")
    parser.add_argument("--keep", default=None, help="folder to keep both outputs in (default: discarded)")
    args = parser.parse_args()
    adapter, data, base = checked_inputs(args)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        tmp = Path(tmp)
        old_tree = tmp / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.before], check=True)
        try:
            copy, folder = fixed_data(adapter, data, args.records, tmp)
            workdir = tmp / "work"  # holds only the before tree's data/: no package here to shadow either version's
            workdir.mkdir()  # ("before"'s allocator re-exec runs ``python -m``, which puts the working folder first)
            (workdir / "data").symlink_to(old_tree / "data")
            common = [
                "--adapters", str(copy), "--data_path", str(folder), "--num_prompts", str(args.num_prompts),
                "--base_model", base,
            ]  # fmt: skip
            versions = {
                "before": (old_tree, common),
                "after": (ROOT, [*common, "--judge", "records", "--max_heldout", "null"]),
            }
            results: dict[str, list[dict]] = {"before": [], "after": []}
            for i in range(args.repeats):
                for name, (tree, extra) in versions.items():
                    out, cache = tmp / f"{name}{i}", tmp / f"cache-{name}{i}"
                    results[name].append(run(name, tree, workdir, extra, out, cache))
                    if args.keep:
                        shutil.copytree(out, Path(args.keep) / f"{name}{i}", dirs_exist_ok=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
    b, a = results["before"], results["after"]
    wall_b, wall_a = min(r["wall_s"] for r in b), min(r["wall_s"] for r in a)
    rss_b, rss_a = max(r["peak_rss_gb"] for r in b), max(r["peak_rss_gb"] for r in a)
    diff = differences(b[0]["metrics"], a[0]["metrics"])
    print(
        f"evaluate: {args.adapter}, {args.records} held-out records, {args.num_prompts} prompts, before = {args.before}"
    )
    print(f"{'':<8}{'wall s':>10}{'peak RSS GB':>14}")
    print(f"{'before':<8}{wall_b:>10.1f}{rss_b:>14.2f}")
    print(f"{'after':<8}{wall_a:>10.1f}{rss_a:>14.2f}")
    print(f"after/before: wall {wall_a / wall_b:.2f}x, peak RSS {rss_a / rss_b:.2f}x")
    print("metrics: identical" if not diff else f"metrics: {len(diff)} differ\n  " + "\n  ".join(diff[:20]))


if __name__ == "__main__":
    main()
