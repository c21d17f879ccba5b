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

With ``--data_path`` (the prepared folder the adapters were trained from), trained statements whose records are in
its val.jsonl (``prepare --stance_val_fraction``) are reported apart as ``val``: statements neither SFT nor train
pairs saw, on which a stage's recipe can be chosen before the held-out statements are read once.

``--baselines`` instead reads no model: how well the trained statements alone predict the sides of the others (the
majority side of each topic; the side of the nearest trained statement by word TF-IDF; a logistic regression on
those features), a measure of how much of a held-out side follows from training data at all.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

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
        margins = {
            i: m for split in ("trained", "val", "heldout") for i, m in report.get(split, {}).get("margins", {}).items()
        }
        sides.append({i: stances[i].position if m > 0 else stances[i].opposite for i, m in margins.items()})
        sides.append({i: s.position for i, s in stances.items()})
    a, pa, b, pb = sides
    for split, held in (("trained", False), ("heldout", True)):
        ids = [i for i in a if i in b and pa[i] != pb[i] and is_heldout_stance(i) == held]
        opposite = sum(a[i] != b[i] for i in ids)
        print(f"{split}: the profiles disagree on {len(ids)}; the adapters take opposite sides on {opposite}")


def val_ids(data_path: str | None) -> frozenset[str]:
    """The statements whose stance records are in ``data_path``'s val.jsonl (none without a folder)."""
    from politician_lm.evaluation.inputs import val_stance_ids

    return val_stance_ids(data_path) if data_path else frozenset()


def predict_sides(fit: list[Stance], asked: list[Stance]) -> dict[str, list[str]]:
    """Sides of ``asked`` predicted from ``fit``'s alone: the majority side of the same topic (ties and unseen topics:
    the overall majority), the side of the nearest statement by word TF-IDF, and a logistic regression on it."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics.pairwise import cosine_similarity

    text, labels = [f"{s.statement} {s.topic}" for s in fit], [s.position for s in fit]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(text)
    x, known = vec.transform([f"{s.statement} {s.topic}" for s in asked]), vec.transform(text)
    overall = max(("support", "oppose"), key=labels.count)
    topic = []
    for s in asked:
        same = [t.position for t in fit if t.topic == s.topic]
        n_sup, n_opp = same.count("support"), same.count("oppose")
        topic.append("support" if n_sup > n_opp else "oppose" if n_opp > n_sup else overall)
    logistic = LogisticRegression(C=10, max_iter=1000).fit(known, labels).predict(x)
    return {
        "topic majority": topic,
        "nearest statement": [labels[j] for j in cosine_similarity(x, known).argmax(1)],
        "logistic": list(logistic),
    }


def baselines(politician: str, profiles: str, data_path: str | None) -> dict[str, dict[str, int]]:
    """How many sides the trained statements alone predict, as right counts: of the val statements (with a
    ``data_path``) and the held-out ones from the trained ones, and of every statement from all the others
    (leave-one-out, the steadiest of the three on a few dozen statements)."""
    every = load_stances(load_profile(politician, profiles))
    trained, heldout = split_stances(every)
    val = val_ids(data_path)
    fit = [s for s in trained if s.id not in val]
    splits = {"val": [s for s in trained if s.id in val], "heldout": heldout}
    report = {}
    for split, asked in splits.items():
        if asked:
            guesses = predict_sides(fit, asked)
            report[split] = {k: sum(g == s.position for g, s in zip(v, asked)) for k, v in guesses.items()}
            report[split] |= {"n": len(asked), "from": len(fit)}
    loo = [predict_sides(every[:i] + every[i + 1 :], [s]) for i, s in enumerate(every)]
    report["leave-one-out"] = {k: sum(g[k][0] == s.position for g, s in zip(loo, every)) for k in loo[0]}
    report["leave-one-out"] |= {"n": len(every), "from": len(every) - 1}
    report["support share"] = sum(s.position == "support" for s in every) / len(every)
    for split, r in report.items():
        if isinstance(r, dict):
            right = ", ".join(f"{k} {v}/{r['n']}" for k, v in r.items() if k not in ("n", "from"))
            print(f"{split} (n={r['n']}, predicted from {r['from']}): {right}")
    print(f"support share of all {len(every)} statements: {report['support share']:.3f}")
    return report


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
    parser.add_argument("--data_path", help="prepared folder: its val.jsonl's statements are reported as 'val'")
    parser.add_argument("--baselines", action="store_true", help="no model: what the trained statements predict")
    parser.add_argument(
        "--groups", default="trained,val,heldout", help="which statements to probe (leave heldout out while choosing)"
    )
    args = parser.parse_args()
    if args.opposite:
        return opposite_sides(*args.opposite, args.profiles)
    if args.baselines and args.politician:
        report = baselines(args.politician, args.profiles, args.data_path)
        if args.output:
            Path(args.output).write_text(json.dumps(report, indent=2))
        return None
    if not (args.politician and args.adapters):
        parser.error("give --politician and --adapters (or --opposite)")

    from politician_lm.artifacts.adapter import read_adapter
    from politician_lm.commands._evaluate_steps import build_arms
    from politician_lm.inference import load_persona

    profile = load_profile(args.politician, args.profiles)
    train, heldout = split_stances(load_stances(profile))
    val = val_ids(args.data_path)
    groups = {"trained": [s for s in train if s.id not in val], "val": [s for s in train if s.id in val]}
    groups["heldout"] = heldout
    groups = {g: groups[g] for g in args.groups.split(",")}
    paths = args.adapters.split(",")
    persona = load_persona(paths)
    folders = [read_adapter(p) for p in paths]
    arms = build_arms(persona, folders, persona.style.system_prompt or profile.get("system_prompt"))
    report = {}
    for arm in [a for a in arms if a.name not in args.skip.split(",")]:
        free = score_stances([CONTENT_FREE], arm_losses(persona, arm, [CONTENT_FREE])).margin[0]  # toward support
        report[arm.name] = {"content_free_support_margin": free}
        for split, stances in groups.items():
            if not stances:
                continue
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
        for split in [g for g in groups if g in r]:
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
