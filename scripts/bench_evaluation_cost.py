"""How much PersonaEvaluation adds to a demo fit: fits with and without it, side by side, median of N runs each.

    python scripts/bench_evaluation_cost.py            # 3 repeats each, about 3 minutes on 2 CPU cores

Each run is a separate process that builds the demo config through the CLI and times ``trainer.fit`` only
(model loading and tokenization included, interpreter start-up excluded). Runs alternate with/without so
machine noise hits both alike. The classifier cache is warmed first, as it is after a user's first run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = """
import sys, time
from politician_lm.training import run_trainer_cli
cli = run_trainer_cli(sys.argv[1:], run=False)
start = time.perf_counter()
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
print(f"FIT_SECONDS {time.perf_counter() - start:.3f}")
"""


def fit_seconds(with_eval: bool, root: str, config: str) -> float:
    args = ["--config", config, "--trainer.default_root_dir", root, "--trainer.enable_progress_bar", "false"]
    if not with_eval:
        args += ["--trainer.callbacks", "[]"]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    return float(proc.stdout.split("FIT_SECONDS")[-1].split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="configs/demo.yaml")
    args = ap.parse_args()
    from politician_lm.evaluation.style import load_or_train

    load_or_train("data")  # warm the classifier cache
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for with_eval in (False, True):
                t = fit_seconds(with_eval, f"{tmp}/run{i}-{with_eval}", args.config)
                times[with_eval].append(t)
                print(f"run {i}: {'with' if with_eval else 'without'} PersonaEvaluation: {t:.1f} s", flush=True)
    base, evald = statistics.median(times[False]), statistics.median(times[True])
    print(f"\nmedian fit time without evaluation: {base:.1f} s, with: {evald:.1f} s")
    print(f"ratio with/without: {evald / base:.3f} (target <= 1.25)")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"bench took {time.perf_counter() - t0:.0f} s")
