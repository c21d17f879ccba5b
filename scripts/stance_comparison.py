"""The preference-stage comparison of issue 25 from ``evaluate`` outputs: one table per politician, then how often
two politicians' adapters take opposite sides where their profiles disagree.

Each ``metrics.json`` is one ``politician-lm evaluate`` run whose first adapter is SFT alone and whose later
adapters are preference stages started from it (``evaluate`` reports every later adapter against the first). Per
arm: held-out stance agreement, its paired difference to prompt-only and to SFT, held-out completion loss and style
attribution with their differences to SFT, all with bootstrap 95% intervals as ``evaluate`` computed them. Then,
for the i-th adapter of the first run against the i-th adapter of the second, the share of the held-out statements
the two profiles take opposite sides on where the two adapters do too (``scorecard.opposite_sides``' rule), and the
stance probe's share of each run's timed work.

    python scripts/stance_comparison.py runs/st/eval-biden/metrics.json runs/st/eval-trump/metrics.json

``--new_since REV`` also reads the held-out statements that the profiles at git revision REV did not have: each
arm's agreement on them alone and every adapter's paired difference to the first (SFT) and to prompt-only, for a
read of statements no earlier experiment saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fmt(e: dict | None, signed: bool = False) -> str:
    if not e:
        return "n/a"
    sign = "+" if signed else ""
    return f"{e['value']:{sign}.3f} [{e['low']:{sign}.3f}, {e['high']:{sign}.3f}]"


def table(m: dict) -> str:
    arms = list(m["arms"])
    adapters = [a for a in arms if a not in ("base", "prompt-only")]
    diffs = m["differences"]
    head = ["arm", "stance agreement (held-out)", "- prompt-only", "- SFT", "held-out loss", "loss - SFT",
            "style", "style - SFT"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        s = m["arms"][arm]
        vs_po = diffs.get(f"{arm} - prompt-only", {})
        vs_sft = diffs.get(f"{arm} - {adapters[0]}", {}) if adapters and arm != adapters[0] else {}
        row = [
            arm,
            fmt(s.get("stance_agreement")),
            fmt(vs_po.get("stance_agreement"), True),
            fmt(vs_sft.get("stance_agreement"), True),
            fmt(s.get("heldout_loss")),
            fmt(vs_sft.get("heldout_loss"), True),
            fmt(s.get("style_attribution")),
            fmt(vs_sft.get("style_attribution"), True),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def opposite(a: dict, b: dict, n_boot: int) -> list[str]:
    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.artifacts.stances import load_stances, split_stances
    from politician_lm.evaluation.scorecard import bootstrap

    documented = {}
    for m in (a, b):
        pol = m["politician"]
        held = split_stances(load_stances(load_profile(pol, str(ROOT / "data" / "profiles")), pol))[1]
        documented[pol] = {s.id: s.position for s in held}
    da, db = documented[a["politician"]], documented[b["politician"]]
    disputed = sorted(i for i in da if i in db and da[i] != db[i])
    adapters = [[x for x in m["arms"] if x not in ("base", "prompt-only")] for m in (a, b)]
    lines = [f"held-out statements the profiles disagree on: {len(disputed)}"]
    for arm_a, arm_b in zip(*adapters):
        sa, sb = a["stances"]["sides"][arm_a], b["stances"]["sides"][arm_b]
        values = [float(sa[i] != sb[i]) for i in disputed]
        right = sum(sa[i] == da[i] and sb[i] == db[i] for i in disputed)
        support = [sum(s[i] == "support" for i in disputed) for s in (sa, sb)]
        lines.append(
            f"{arm_a} vs {arm_b}: opposite sides {bootstrap(values, n_boot=n_boot, seed=0)}; both on their own "
            f'documented side on {right}, "support" {support[0]} and {support[1]}'
        )
    return lines


def new_statements(m: dict, rev: str, n_boot: int) -> list[str]:
    """Each arm's agreement on the held-out statements absent from ``data/profiles/<politician>.yaml`` at ``rev``,
    and every adapter's paired difference on them to prompt-only and to the first adapter."""
    import subprocess

    import yaml

    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.artifacts.stances import load_stances, split_stances
    from politician_lm.evaluation.scorecard import bootstrap, paired_difference

    pol = m["politician"]
    old = subprocess.run(["git", "show", f"{rev}:data/profiles/{pol}.yaml"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    before = {s["id"] for s in yaml.safe_load(old).get("stances") or []}
    held = split_stances(load_stances(load_profile(pol, str(ROOT / "data" / "profiles")), pol))[1]
    new = [s for s in held if s.id not in before]
    if not new:
        return [f"{pol}: no held-out statement is new since {rev}"]
    sides = m["stances"]["sides"]
    agree = {arm: [float(sides[arm][s.id] == s.position) for s in new] for arm in sides}
    lines = [f"{pol}: {len(new)} held-out statements new since {rev} ({sum(s.position == 'support' for s in new)} "
             "supported)"]  # fmt: skip
    for arm, values in agree.items():
        lines.append(f"  {arm}: {fmt(bootstrap(values, n_boot=n_boot, seed=0).to_dict())}")
    adapters = [a for a in sides if a not in ("base", "prompt-only")]
    for arm in adapters:
        for ref in ["prompt-only"] + adapters[:1] * (arm != adapters[0]):
            d = paired_difference(agree[arm], agree[ref], n_boot=n_boot, seed=0)
            lines.append(f"  {arm} - {ref}: {fmt(d.__dict__, True)}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", nargs="+", help="metrics.json of evaluate runs (two for the opposite-sides share)")
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--new_since", help="also read the held-out statements the profiles did not have at this git rev")
    args = p.parse_args()
    runs = [json.loads(Path(f).read_text()) for f in args.metrics]
    for f, m in zip(args.metrics, runs):
        seconds = m.get("seconds", {})
        share = seconds.get("stances", 0.0) / max(sum(seconds.values()), 1e-9)
        print(f"\n## {m['politician']} ({f})\n\n{table(m)}\n")
        print(f"timed work: {seconds}; stance probe {share:.1%} of it")
    if len(runs) == 2:
        print("\n" + "\n".join(opposite(*runs, args.n_boot)))
    for m in runs if args.new_since else []:
        print("\n" + "\n".join(new_statements(m, args.new_since, args.n_boot)))


if __name__ == "__main__":
    main()
