"""The scorecard as ``metrics.json`` holds it and as the terminal prints it (a plain-text table)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from politician_lm.evaluation import scorecard
from politician_lm.evaluation.arms import BASE, PROMPT_ONLY, ArmRuns, differences, summaries
from politician_lm.evaluation.inputs import HeldOut
from politician_lm.evaluation.recipe import recipe_record

__all__ = ["judge_record", "scorecard_report", "scorecard_text", "short_name", "short_namer"]


MIN_STATEMENTS = 5  # fewer held-out statements give an interval that means little
WEAK_CLASS = 0.5  # a judge that finds the politician's own held-out speech less often than this cannot show style


def scorecard_report(
    politician: str,
    runs: ArmRuns,
    held: HeldOut,
    judge_kind: str,
    n_style: int,
    n_identity: int,
    n_boot: int,
    seed: int,
    pool: list[str] | None = None,
) -> dict[str, Any]:
    """metrics.json: every arm's metrics and the paired differences with bootstrap 95% intervals (``n_boot``
    resamples, ``seed``), what was scored, the split and loss sample, the judge, the confusion matrix; with ``pool``
    (adapter arms that are fits of one recipe) their mean per item as the recipe (``evaluation.recipe``)."""
    summary = summaries(runs.results, n_boot, seed)
    widths = {n: round(e["high"] - e["low"], 4) for n, e in _losses(summary).items()}
    classifier = judge_record(runs.classifier, judge_kind, runs.n_generic)
    return {
        "politician": politician,
        "targets": {name: s.target for name, s in runs.results.items()},
        "n_style_prompts": n_style,
        "n_identity_prompts": n_identity,
        "n_heldout_losses": len(held.loss_rows),
        "heldout": held.record() | {"loss_interval_width": widths},
        "classifier": classifier,
        "arms": summary,
        "differences": differences(runs.results, n_boot, seed),
        "confusion": scorecard.confusion(runs.results, classifier["labels"]) | real_speech_row(runs, classifier),
        "real_speech": real_speech_record(runs, politician, n_boot, seed),
        "corpus_distinct": runs.corpus_distinct,
        "stances": stance_record(runs.results, n_boot, seed),
        "bootstrap": {"interval": "percentile, 95%", "n_boot": n_boot, "seed": seed, "paired": True},
        "seconds": {part: round(t, 1) for part, t in runs.seconds.items()},
        "cached_arms": runs.cached,
        "recipe": recipe_record(runs.results, pool, summary, n_boot, seed) if pool else None,
    }


REAL_SPEECH = "real speech"


def real_speech_row(runs: ArmRuns, classifier: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The confusion matrix's row for the real speech: the judge's labels of the style prompts' references."""
    if not runs.real_speech:
        return {}
    return {REAL_SPEECH: {label: runs.real_speech.count(label) for label in classifier["labels"]}}


def real_speech_record(runs: ArmRuns, politician: str, n_boot: int, seed: int) -> dict[str, Any] | None:
    """metrics.json's ``real_speech``: how often the judge attributes the politician's own continuation of each
    style prompt (cut to the answers' length) to the politician: the most a persona's ``style_attribution`` can
    be expected to reach with this judge; and each adapter's paired difference to it on the same prompts
    (``"<adapter> - real speech"``: how far the adapter is from sounding as the politician did), for the adapters of
    that politician only."""
    if not runs.real_speech:
        return None
    own = [float(label == politician) for label in runs.real_speech]
    gaps = {
        f"{name} - {REAL_SPEECH}": scorecard.paired_difference(s.attributed, own, n_boot=n_boot, seed=seed).to_dict()
        for name, s in runs.results.items()
        if name not in (BASE, PROMPT_ONLY) and len(s.predicted) == len(own) and s.target == politician
    }  # an adapter of another politician is no attempt at this politician's speech
    return {"style_attribution": scorecard.bootstrap(own, n_boot=n_boot, seed=seed).to_dict(), "differences": gaps}


def stance_record(results: dict[str, scorecard.ArmScores], n_boot: int, seed: int) -> dict[str, Any]:
    """metrics.json's ``stances``: the side each arm takes per statement, and for every two arms with different
    targets the share of the held-out statements their targets disagree on where the two take opposite sides, with
    ``scorecard.dispute_counts`` beside it (an arm that answers one side to everything inflates the share)."""
    sides = {name: dict(zip(s.stance_ids, s.stance_sides)) for name, s in results.items() if s.stance_ids}
    opposition = {}
    names = [n for n in sides if n not in (BASE, PROMPT_ONLY)]  # adapters: each scored against its own politician
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if results[a].target != results[b].target:
                if (e := scorecard.opposite_sides(results[a], results[b], n_boot, seed)) is not None:
                    counts = scorecard.dispute_counts(results[a], results[b])
                    opposition[f"{a} vs {b}"] = {**e.to_dict(), **counts}
    return {"sides": sides, "opposite_sides": opposition}


def judge_record(classifier: Any, kind: str, n_generic: int) -> dict[str, Any]:
    """metrics.json's ``classifier``: which judge, its labels and held-out accuracy, how many generic texts."""
    return {
        "judge": kind,
        "labels": classifier.labels,
        "held_out_accuracy": classifier.held_out_accuracy,
        "per_class_accuracy": getattr(classifier, "per_class_accuracy", None),
        "features": getattr(classifier, "features", "records"),
        "generic_texts": n_generic,
    }


def _losses(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {name: metrics["heldout_loss"] for name, metrics in summary.items() if "heldout_loss" in metrics}


def scorecard_text(report: dict[str, Any]) -> str:
    """The scorecard as a plain-text table: value [95% interval] per arm and metric, then the differences."""
    from politician_lm.evaluation.scorecard import METRICS

    short = short_namer(list(report["arms"]))

    def cell(e: dict | None) -> str:
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" if e else "-"

    lines = [
        f"Persona scorecard: {report['politician']} ({counts_phrase(report)}; "
        f"{report['classifier'].get('judge', 'records')} style judge, held-out accuracy "
        f"{report['classifier']['held_out_accuracy']:.3f})"
    ]
    own = (report["classifier"].get("per_class_accuracy") or {}).get(report["politician"])
    if own is not None:
        lines[0] = lines[0][:-1] + f", {report['politician']} {own:.3f})"
        if own < WEAK_CLASS:
            lines.append(
                f"the judge tells {report['politician']}'s own held-out speech apart in {own:.3f} of its chunks: "
                f"style attribution to {report['politician']} says little; add transcripts for a reading"
            )
    if (penalty := (report.get("decoding") or {}).get("repetition_penalty", 1.0)) != 1.0:
        lines[0] += f"; greedy with repetition penalty {penalty}"
    lines += [line for line in [sample_line(report)] if line]
    lines += stance_count_lines(report)
    names = list(report["arms"]) + list(report["differences"])
    width = max(len(short(n)) for n in names) + 2
    lines.append(f"{'':<{width}}" + "".join(f"{m:<26}" for m in METRICS))
    for group in ("arms", "differences"):
        for name, metrics in report[group].items():
            lines.append(f"{short(name):<{width}}" + "".join(f"{cell(metrics.get(m)):<26}" for m in METRICS))
        lines.append("")
    if real := report.get("real_speech"):
        lines.append(
            f"{REAL_SPEECH}: the held-out continuation of each style prompt, cut to the answers' length, judged "
            f"{report['politician']}: {cell(real['style_attribution'])} (the judge's ceiling for style_attribution)"
        )
        for pair, e in real.get("differences", {}).items():
            lines.append(f"  style_attribution, {short(pair.split(' - ')[0])} - {REAL_SPEECH}: {cell(e)}")
    if recipe := report.get("recipe"):
        names = ", ".join(map(short, recipe["adapters"]))
        lines.append(f"recipe: the mean per item of {len(recipe['adapters'])} fits ({names})")
        for key, e in recipe["mean"].items():
            gap = recipe[f"mean - {PROMPT_ONLY}"].get(key)
            fits = ", ".join(f"{v:.3f}" for v in recipe["fits"][key])
            lines.append(f"  {key}: {cell(e)}, - {PROMPT_ONLY} {cell(gap)}; fits {fits}")
    for pair, e in (report.get("stances") or {}).get("opposite_sides", {}).items():
        a, b = pair.split(" vs ")
        lines.append(
            f"opposite sides on held-out statements their politicians disagree on, {short(a)} vs "
            f"{short(b)}: {cell(e)} of {e['n']}"
            + (
                f'; both on their own documented side on {e["both_documented"]}, "support" from '
                f"{short(a)} on {e['support_a']} and from {short(b)} on {e['support_b']}"
                if "both_documented" in e
                else ""
            )
        )
    lines.append("style classifier confusion (rows: arm, columns: predicted)")
    labels = report["classifier"]["labels"]
    lines.append(f"{'':<{width}}" + "".join(f"{lab:>10}" for lab in labels))
    for name, counts in report["confusion"].items():
        lines.append(f"{short(name):<{width}}" + "".join(f"{counts[lab]:>10}" for lab in labels))
    return "\n".join(lines)


def counts_phrase(report: dict[str, Any]) -> str:
    """What every arm was asked and scored on, for the table's and the report's first line: held-out prompts, or
    the prompts of ``--prompts_file`` (``prompts_file`` in metrics.json), identity probes and held-out completions."""
    source = f"prompts of {Path(file).name}" if (file := report.get("prompts_file")) else "held-out prompts"
    return (
        f"{report['n_style_prompts']} {source}, {report['n_identity_prompts']} identity probes, "
        f"{report['n_heldout_losses']} held-out completions"
    )


def sample_line(report: dict[str, Any]) -> str | None:
    """The held-out loss's ``--max_heldout`` sample and each arm's loss interval width (None: every record)."""
    heldout = report.get("heldout") or {}
    if not heldout.get("sampled"):
        return None
    short = short_namer(list(report["arms"]))
    widths = ", ".join(f"{short(n)} {w:.3f}" for n, w in heldout.get("loss_interval_width", {}).items())
    return (
        f"held-out loss on a seeded sample of {heldout['used']} of {heldout['available']} records "
        f"(--max_heldout {heldout['max_heldout']}); loss interval widths: {widths}"
    )


def stance_count_lines(report: dict[str, Any]) -> list[str]:
    """How many statements each stance metric reads (an interval over 1 or 2 statements looks certain and is not)."""
    out = [report["stance_note"]] if report.get("stance_note") else []
    short = short_namer(list(report["arms"]))
    for metric in ("stance_agreement", "stance_agreement_val", "stance_agreement_seen"):
        ns = {name: m[metric]["n"] for name, m in report["arms"].items() if m.get(metric) and "n" in m[metric]}
        if ns:  # arms of other politicians are probed on their own profiles' statements
            counts = (
                f"{next(iter(ns.values()))} statements"
                if len(set(ns.values())) == 1
                else "; ".join(f"{short(name)} {n} statements" for name, n in ns.items())
            )
            few = (
                f" (fewer than {MIN_STATEMENTS}: add statements to the profile for a reading)"
                if min(ns.values()) < MIN_STATEMENTS
                else ""
            )
            out.append(f"{metric} over {counts}{few}")
    for name, sides in (report.get("stances") or {}).get("sides", {}).items():
        if len(sides) > 1 and len(set(sides.values())) == 1:  # a yes-sayer's agreement is the profile's share
            side = next(iter(sides.values()))
            out.append(
                f"{short_name(name)} takes '{side}' on all {len(sides)} statements: its stance agreement is the share "
                f"of statements the profile answers '{side}', not a reading of its positions"
            )
    return out


def short_name(name: str) -> str:
    """``runs/smollm2-biden/adapters/best`` -> ``smollm2-biden/best``: arm names that fit a table column."""
    if " - " in name:  # a difference between two arms
        return " - ".join(short_name(part) for part in name.split(" - "))
    parts = Path(name).parts
    if len(parts) >= 3 and parts[-2] == "adapters":
        return f"{parts[-3]}/{parts[-1]}"
    return name if len(name) <= 40 else "…" + name[-39:]


def short_namer(arms: list[str]) -> Callable[[str], str]:
    """``short_name`` made unique over ``arms``: adapters whose short names are equal (``fit-biden/last`` under two
    parents) show the folders above their run folder, one more at a time, until they differ (at most in full)."""
    shorts = {a: short_name(a) for a in arms}
    for a in arms:
        clash = [b for b in arms if shorts[b] == shorts[a]]
        for depth in range(1, 64):
            if len({shorts[b] for b in clash}) == len(clash):
                break
            for b in clash:
                parts = Path(b).parts
                tail = parts[-3:-2] + parts[-1:] if len(parts) >= 3 and parts[-2] == "adapters" else parts[-1:]
                above = parts[: len(parts) - (3 if len(tail) == 2 else 1)]
                shorts[b] = "/".join(above[-depth:] + tail) if depth <= len(above) else b

    def short(name: str) -> str:
        if " - " in name:
            return " - ".join(short(part) for part in name.split(" - "))
        return shorts.get(name) or short_name(name)

    return short
