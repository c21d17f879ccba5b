"""The ``evaluate`` scorecard page: a self-contained HTML report with matplotlib plots (PNG inlined)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from politician_lm.evaluation.card import counts_phrase, sample_line, stance_count_lines

SHOWN_PROMPTS = 12  # report.html's answers: the first prompts (samples.jsonl holds all of them)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def curve_plots(logs: dict[str, dict[str, list[tuple[int, float]]]]) -> bytes | None:
    """Loss and persona-metric curves over steps, one panel per metric, a line per log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wanted = [
        "train_loss",
        "val_loss",
        "persona/style_attribution",
        "persona/identity_score",
        "persona/rouge_l",
        "persona/distinct_2",
    ]
    present = [k for k in wanted if any(k in s for s in logs.values())]
    if not present:
        return None
    cols = min(3, len(present))
    rows = -(-len(present) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, present):
        for label, series in logs.items():
            if key in series:
                # the value before training (logged as <key>_at_start at step 0) starts the curve
                steps, values = zip(*sorted(series.get(f"{key}_at_start", []) + series[key]))
                ax.plot(steps, values, marker=".", label=label)
        ax.set_title(key)
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def interval_plots(arms: dict[str, dict[str, dict[str, float]]], short: Any = str) -> bytes:
    """One panel per metric: each arm's value as a dot with its 95% interval, arms on the y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        m
        for m in dict.fromkeys(k for a in arms.values() for k in a)
        if any(a.get(m, {}).get("high", 0) > 0 for a in arms.values())
    ]  # all-zero metrics say nothing
    cols = 2
    rows = max(1, -(-len(metrics) // cols))
    names = list(arms)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 0.45 * len(names) * rows + 1.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for y, name in enumerate(names):
            e = arms[name].get(metric)
            if e:
                ax.errorbar(
                    e["value"],
                    y,
                    xerr=[[e["value"] - e["low"]], [e["high"] - e["value"]]],
                    fmt="o",
                    color=f"C{y}",
                    capsize=3,
                )
        ax.set_yticks(range(len(names)), [short(n) for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric + (" (lower is better)" if metric in ("heldout_loss", "memorization", "claims_ai") else ""))
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def _samples_html(samples: list[dict[str, Any]], short: Any) -> str:
    """Every arm's answer to each of the first ``SHOWN_PROMPTS`` prompts, and a line saying so when there are more."""
    esc = html.escape
    by_prompt: dict[str, list[dict]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt"], []).append(s)
    out = "".join(
        f"<h3>{esc(p)}</h3><table>"
        + "".join(f"<tr><td>{esc(short(s['arm']))}</td><td>{esc(s['generation'])}</td></tr>" for s in ss)
        + "</table>"
        for p, ss in list(by_prompt.items())[:SHOWN_PROMPTS]
    )
    if len(by_prompt) > SHOWN_PROMPTS:
        out += f"<p>The first {SHOWN_PROMPTS} of {len(by_prompt)} prompts; samples.jsonl holds every answer.</p>"
    return out


def write_scorecard(
    folder: Path,
    report: dict[str, Any],
    samples: list[dict[str, Any]],
    logs: dict[str, dict[str, list[tuple[int, float]]]],
    short: Any = str,
) -> None:
    """report.html (self-contained), intervals.png and, with logs, curves.png for an ``evaluate`` scorecard."""
    images = {"intervals.png": interval_plots(report["arms"], short)}
    curves = curve_plots(logs) if logs else None
    if curves:
        images["curves.png"] = curves
    for name, data in images.items():
        (folder / name).write_bytes(data)
    esc = html.escape

    def cell(e: dict | None) -> str:
        return f"{e['value']:.3f} <small>[{e['low']:.3f}, {e['high']:.3f}]</small>" if e else "–"

    def table(group: dict[str, dict[str, dict]]) -> str:
        metrics = list(dict.fromkeys(k for m in group.values() for k in m))
        head = "".join(f"<th>{esc(m)}</th>" for m in metrics)
        body = "".join(
            f"<tr><td>{esc(short(n))}</td>" + "".join(f"<td>{cell(v.get(m))}</td>" for m in metrics) + "</tr>"
            for n, v in group.items()
        )
        return f"<table><tr><th></th>{head}</tr>{body}</table>"

    labels = report["classifier"]["labels"]
    confusion = (
        "<table><tr><th>arm \\ predicted</th>"
        + "".join(f"<th>{esc(lab)}</th>" for lab in labels)
        + "</tr>"
        + "".join(
            f"<tr><td>{esc(short(n))}</td>" + "".join(f"<td>{c[lab]}</td>" for lab in labels) + "</tr>"
            for n, c in report["confusion"].items()
        )
        + "</table>"
    )
    notes = "".join(f"<p>{esc(line)}</p>" for line in stance_count_lines(report))  # what the stance numbers rest on
    sample_html = _samples_html(samples, short)
    imgs = "".join(
        f"<h2>{'Scores with 95% intervals' if n == 'intervals.png' else 'Training curves'}</h2>"
        f'<img alt="{n}" src="data:image/png;base64,{base64.b64encode(d).decode()}">'
        for n, d in images.items()
    )
    title = f"Persona scorecard: {report['politician']}"
    real = report.get("real_speech")
    real_speech = (
        f" The politician's own held-out continuations of the style prompts, cut to the answers' length, are judged "
        f"theirs {cell(real['style_attribution'])}: the most style attribution can show with this judge."
        + "".join(f" {esc(short(p))}: {cell(e)}." for p, e in real.get("differences", {}).items())
        if real
        else ""
    )
    recipe = report.get("recipe")
    recipe_html = (
        f"<h2>Recipe: the mean per item of {len(recipe['adapters'])} fits</h2><p>"
        + esc(", ".join(short(a) for a in recipe["adapters"]))
        + " (each fit's own numbers are its row under Arms; the interval is over items, these fits held fixed)</p>"
        + table({k: v for k, v in recipe.items() if k.startswith("mean")})
        if recipe
        else ""
    )
    penalty = (report.get("decoding") or {}).get("repetition_penalty", 1.0)
    decoding = "greedy decoding" + (f" with repetition penalty {penalty}" if penalty != 1.0 else "")
    acc = report["classifier"]["held_out_accuracy"]
    sample = f" {esc(line)}." if (line := sample_line(report)) else ""
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1300px;margin:auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}img{max-width:100%}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{esc(counts_phrase(report))}; {decoding}.{sample} Style classifier classes: "
        f"{esc(', '.join(labels))}; its own held-out accuracy {acc:.3f}.{real_speech}</p>"
        f"<h2>Arms</h2>{table(report['arms'])}{notes}<h2>Differences (paired bootstrap)</h2>"
        f"{table(report['differences'])}"
        f"{recipe_html}<h2>Style classifier confusion</h2>{confusion}{imgs}<h2>Samples</h2>{sample_html}</body></html>"
    )
    (folder / "report.html").write_text(page, encoding="utf-8")
