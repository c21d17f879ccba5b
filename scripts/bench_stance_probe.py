"""The stance probe's likelihood pass (``Persona.stance_losses``, what ``evaluate`` runs per arm): every answer of a
statement in one row after one copy of its question, statements of like length a pass (``model.group_scoring``), against
a row per answer, one statement a batch (``completion_losses(..., in_order=True)``, the pass before), side by side
in one process, alternated.

    python scripts/bench_stance_probe.py --adapter runs/sotu-biden/adapters/best --politician biden
    python scripts/bench_stance_probe.py --adapter runs/sotu-biden/adapters/best --politician biden --all

Prints the median seconds of each over ``--repeats`` rounds (after one warm-up each), their ratio, the largest
relative difference of an answer's summed NLL between them, and on how many statements the two take different
sides. Run it on an otherwise idle machine.
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
    from politician_lm.evaluation.stances import PROBE_ROWS

    passes = {
        "a row per answer": lambda group: persona.completion_losses(group, PROBE_ROWS, lambda _: None, in_order=True),
        "a row per statement": persona.stance_losses,
    }

    def run(name: str) -> tuple[float, list[tuple[float, int]]]:
        started = time.perf_counter()
        losses = probe_losses(stances, passes[name])
        return time.perf_counter() - started, losses

    seconds: dict[str, list[float]] = {name: [] for name in passes}
    losses: dict[str, list[tuple[float, int]]] = {}
    for name in passes:  # warm-up
        run(name)
    for _ in range(args.repeats):
        for name in passes:
            took, losses[name] = run(name)
            seconds[name].append(took)
    before, after = losses["a row per answer"], losses["a row per statement"]
    worst = max(abs(a - b) / max(abs(b), 1e-12) for (a, _), (b, _) in zip(after, before))
    flips = sum(x != y for x, y in zip(score_stances(stances, after).sides, score_stances(stances, before).sides))
    old, new = (statistics.median(seconds[name]) for name in passes)
    print(f"{len(stances)} statements, {len(before)} answers, {args.repeats} rounds, medians", file=sys.stderr)
    print(f"a row per answer     {old:7.2f} s")
    print(f"a row per statement  {new:7.2f} s   ({new / old:.2f}x)")
    print(f"largest relative difference of an answer's NLL: {worst:.1e}; statements on another side: {flips}")


if __name__ == "__main__":
    main()
