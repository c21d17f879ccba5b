"""The stance probe's likelihood pass (``Persona.stance_losses``, what ``evaluate`` runs per arm) with the questions
run ahead in one pass per ``PREFILL`` statements, against one question a batch of one (``PREFILL = 1``, the pass
before), side by side in one process, alternated.

    python scripts/bench_stance_probe.py --adapter runs/sotu-biden/adapters/best --politician biden
    python scripts/bench_stance_probe.py --adapter runs/sotu-biden/adapters/best --politician biden --all

Prints the median seconds of each over ``--repeats`` rounds (after one warm-up each), their ratio, the largest
relative difference of a row's summed NLL between them, and on how many statements the two take different sides.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="adapter folder (its base and prompt format are used)")
    parser.add_argument("--politician", required=True, help="profile whose stances are probed")
    parser.add_argument("--profiles_dir", default=str(ROOT / "data" / "profiles"))
    parser.add_argument("--all", action="store_true", help="every statement, not only the held-out ones")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import politician_lm.inference as inference
    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.artifacts.stances import is_heldout_stance, load_stances
    from politician_lm.evaluation.stances import probe_losses, score_stances

    persona = inference.load_persona([args.adapter])
    profile = load_profile(args.politician, args.profiles_dir)
    stances = load_stances(profile, f"{args.profiles_dir}/{args.politician}.yaml")
    stances = stances if args.all else [s for s in stances if is_heldout_stance(s.id)]
    ahead = inference.PREFILL

    def run(prefill: int) -> tuple[float, list[tuple[float, int]]]:
        inference.PREFILL = prefill
        started = time.perf_counter()
        losses = probe_losses(stances, persona.stance_losses)
        return time.perf_counter() - started, losses

    seconds: dict[str, list[float]] = {"one at a time": [], "run ahead": []}
    run(1), run(ahead)  # warm-up
    for _ in range(args.repeats):
        for name, prefill in (("one at a time", 1), ("run ahead", ahead)):
            took, losses = run(prefill)
            seconds[name].append(took)
            if name == "one at a time":
                before = losses
            else:
                after = losses
    inference.PREFILL = ahead
    worst = max(abs(a - b) / max(abs(b), 1e-12) for (a, _), (b, _) in zip(after, before))
    flips = sum(x != y for x, y in zip(score_stances(stances, after).sides, score_stances(stances, before).sides))
    old, new = statistics.median(seconds["one at a time"]), statistics.median(seconds["run ahead"])
    print(f"{len(stances)} statements, {len(before)} answers, {args.repeats} rounds, medians", file=sys.stderr)
    print(f"one question at a time  {old:7.2f} s")
    print(f"questions run ahead     {new:7.2f} s   ({new / old:.2f}x)")
    print(f"largest relative difference of an answer's NLL: {worst:.1e}; statements on another side: {flips}")


if __name__ == "__main__":
    main()
