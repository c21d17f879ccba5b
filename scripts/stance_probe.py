"""The stance probe alone, per arm, on trained and held-out statements: a minute where ``evaluate`` takes an hour.

For a politician and a list of adapters (the first usually SFT, later ones preference stages from it), prints per
arm (base, prompt-only, each adapter) and per split (statements seen in training, held-out ones):

- agreement with the profile, with its bootstrap 95% interval;
- how many statements the arm puts on the support side (a probe that answers "support" to everything scores the
  profile's share of support statements, whatever the model knows);
- the mean log-likelihood margin toward the profile's side, separately on the profile's support and oppose
  statements (a change that moves both the same way is a change of the yes/no prior, not of positions);
- the same agreement read against a content-free question ("Do you support it?"): the arm's margin on each
  statement minus its margin on that question, which removes a constant lean to one side (contextual calibration,
  Zhao et al. 2021). A diagnostic only: the scorecard reports the uncalibrated probe.

    python scripts/stance_probe.py --politician biden \\
        --adapters runs/st/biden-sft/adapters/best,runs/st/biden-dpo-pos/adapters/best --output probe-biden.json
    python scripts/stance_probe.py --opposite biden:probe-biden.json:ARM trump:probe-trump.json:ARM
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.stances import Stance, is_heldout_stance, load_stances, split_stances
from politician_lm.evaluation.scorecard import bootstrap
from politician_lm.evaluation.stances import probe_losses, score_stances

CONTENT_FREE = Stance("content-free", "none", "it", "support", "none")


def auroc(support_minus_oppose: list[float], positions: list[str]) -> float:
    """Chance that a statement the profile supports gets a higher support-minus-oppose score than one it opposes
    (ties count half): the probe's ranking of positions, blind to a lean shared by every statement."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([p == "support" for p in positions], support_minus_oppose))


def arm_losses(persona, arm, stances):
    from politician_lm.commands._evaluate_steps import arm_persona

    with arm_persona(persona, arm) as answering:
        return probe_losses(stances, lambda g: answering.stance_losses(arm.conversations(g)))


def opposite_sides(spec_a: str, spec_b: str, profiles: str) -> None:
    """Print how often two adapters take opposite sides where their profiles do, from two ``--output`` files, each
    given as ``POLITICIAN:FILE:ARM`` (trained and held-out statements apart)."""
    sides = []
    for spec in (spec_a, spec_b):
        politician, path, arm = spec.split(":", 2)
        stances = {s.id: s for s in load_stances(load_profile(politician, profiles))}
        report = json.load(open(path))[arm]
        margins = {**report["trained"]["margins"], **report["heldout"]["margins"]}
        sides.append({i: stances[i].position if m > 0 else stances[i].opposite for i, m in margins.items()})
        sides.append({i: s.position for i, s in stances.items()})
    a, pa, b, pb = sides
    for split, held in (("trained", False), ("heldout", True)):
        ids = [i for i in a if i in b and pa[i] != pb[i] and is_heldout_stance(i) == held]
        opposite = sum(a[i] != b[i] for i in ids)
        print(f"{split}: the profiles disagree on {len(ids)}; the adapters take opposite sides on {opposite}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--politician")
    parser.add_argument("--adapters", help="comma-separated adapter folders")
    parser.add_argument(
        "--opposite",
        nargs=2,
        metavar="POLITICIAN:FILE:ARM",
        help="instead of probing: how often two probed adapters take opposite sides where their profiles do",
    )
    parser.add_argument("--profiles", default="data/profiles")
    parser.add_argument("--output", default=None, help="also write the numbers as JSON here")
    parser.add_argument("--skip", default="", help="comma-separated arms not to probe (e.g. base,prompt-only)")
    args = parser.parse_args()
    if args.opposite:
        return opposite_sides(*args.opposite, args.profiles)
    if not (args.politician and args.adapters):
        parser.error("give --politician and --adapters (or --opposite)")

    from politician_lm.artifacts.adapter import read_adapter
    from politician_lm.commands._evaluate_steps import build_arms
    from politician_lm.inference import load_persona

    profile = load_profile(args.politician, args.profiles)
    train, heldout = split_stances(load_stances(profile))
    paths = args.adapters.split(",")
    persona = load_persona(paths)
    folders = [read_adapter(p) for p in paths]
    arms = build_arms(persona, folders, persona.style.system_prompt or profile.get("system_prompt"))
    report = {}
    for arm in [a for a in arms if a.name not in args.skip.split(",")]:
        free = score_stances([CONTENT_FREE], arm_losses(persona, arm, [CONTENT_FREE])).margin[0]  # toward support
        report[arm.name] = {"content_free_support_margin": free}
        for split, stances in (("trained", train), ("heldout", heldout)):
            s = score_stances(stances, arm_losses(persona, arm, stances))
            sign = [1.0 if st.position == "support" else -1.0 for st in stances]
            calibrated = [float((m - sg * free) > 0) for m, sg in zip(s.margin, sign)]
            by_pos = {
                pos: [m for m, st in zip(s.margin, stances) if st.position == pos] for pos in ("support", "oppose")
            }
            report[arm.name][split] = {
                "n": len(stances),
                "agreement": asdict(bootstrap(s.agree)),
                "calibrated_agreement": asdict(bootstrap(calibrated)),
                "n_support_side": s.sides.count("support"),
                "n_profile_support": len(by_pos["support"]),
                "margin_on_support_statements": sum(by_pos["support"]) / max(1, len(by_pos["support"])),
                "margin_on_oppose_statements": sum(by_pos["oppose"]) / max(1, len(by_pos["oppose"])),
                "auroc": auroc([sg * m for sg, m in zip(sign, s.margin)], [st.position for st in stances]),
                "margins": dict(zip(s.ids, s.margin)),
            }
    for name, r in report.items():
        print(f"\n{name}  (content-free margin toward support {r['content_free_support_margin']:+.2f})")
        for split in ("trained", "heldout"):
            x = r[split]
            a, c = x["agreement"], x["calibrated_agreement"]
            print(
                f"  {split:8s} n={x['n']:2d} agreement {a['value']:.3f} [{a['low']:.3f}, {a['high']:.3f}]"
                f"  calibrated {c['value']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"
                f"  support side {x['n_support_side']}/{x['n']} (profile {x['n_profile_support']})"
                f"  margin: support stmts {x['margin_on_support_statements']:+.2f},"
                f" oppose stmts {x['margin_on_oppose_statements']:+.2f}  AUROC {x['auroc']:.3f}"
            )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
