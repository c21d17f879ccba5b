"""``politician-lm evaluate``: the persona scorecard. Every arm answers the same held-out prompts, greedily:

* ``base``: the base model with no persona (its own default system prompt, if its template has one);
* ``prompt-only``: the base given only the persona's system prompt, the baseline a fine-tune must beat;
* each adapter and merged adapter, rendering prompts exactly as it was trained (another politician's adapter is
  simply another adapter: it is scored against its own politician and shows up in the confusion matrix).

Metrics per arm, each with a bootstrap 95% interval, and the paired difference of every adapter to prompt-only
(and of every later adapter to the first one, e.g. SFT followed by DPO against SFT alone):
style attribution (a classifier that also knows a ``generic`` class: the base model's own answers without persona),
identity on probe questions worded unlike the training ones, memorization (12-word verbatim copies of training
completions), the loss on held-out completions and distinct-2 (the share of an answer's word bigrams that are not
repeats within it: degeneration lowers it; the corpus-wide distinct-1/2 of each arm's answers is reported too).
"""

from __future__ import annotations

import json
import random
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml

from politician_lm.artifacts.adapter import read_adapter
from politician_lm.artifacts.atomic import atomic_dir, check_output
from politician_lm.artifacts.jsonl import jsonl_text, read_jsonl
from politician_lm.artifacts.profiles import load_profile
from politician_lm.data import records
from politician_lm.errors import UserError
from politician_lm.evaluation.heldout import DEFAULT_MAX_HELDOUT, document_rows, recorded_split, sample_heldout
from politician_lm.values import check_choice, parse_list

PROMPT_ONLY = "prompt-only"
BASE = "base"


def split_records(data_path: str, val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """``(train, held_out)`` conversations of ``data_path``, split exactly as the DataModule splits them."""
    files = records.discover(data_path)
    preference = records.detect_preference(files)  # a DPO adapter's pairs: their prompts and chosen answers
    records.validate(files, preference)
    convert = records.to_preference if preference else records.to_conversation
    rows = [convert(obj) for f in files.train for _, obj in read_jsonl(f)]
    if files.val:
        held = [convert(obj) for f in files.val for _, obj in read_jsonl(f)]
        return rows, held
    val = [records.is_heldout(r["messages"], seed, val_fraction) for r in rows]
    return [r for r, v in zip(rows, val) if not v], [r for r, v in zip(rows, val) if v]


def _trained_data(adapter: Path) -> dict[str, Any]:
    cfg_file = adapter / "training_config.yaml"
    return (yaml.safe_load(cfg_file.read_text()) or {}).get("data", {}) if cfg_file.is_file() else {}


def evaluate(
    adapters: list[str] | str,
    output_dir: str,
    data_path: str | None = None,
    merged: list[str] | str | None = None,
    base_model: str | None = None,
    politician: str | None = None,
    prompts_file: str | None = None,
    identity_probes: str = "data/identity_probes.jsonl",
    logs: list[str] | str | None = None,
    num_prompts: int = 60,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    val_fraction: float | None = None,
    split_seed: int | None = None,
    style_data_dir: str = "data",
    profiles_dir: str = "data/profiles",
    generic_prompts: int = 96,
    memorization_words: int = 12,
    judge: Literal["auto", "records", "sotu"] = "auto",
    judge_presidents: list[str] | str = "biden,trump,obama",
    max_heldout: int | None = DEFAULT_MAX_HELDOUT,
    n_boot: int = 2000,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Persona scorecard: base, prompt-only and every adapter on the same held-out prompts, with 95% intervals.

    Args:
        adapters: Adapter folders, as ``a,b`` or a list; the first one's politician is the target.
        output_dir: Folder for metrics.json, report.html and samples.jsonl (written atomically).
        data_path: JSONL file or folder whose held-out split gives the prompts and the loss (default: the data the
            first adapter was trained on).
        merged: Merged adapter folders (from ``politician-lm merge``) to score as well.
        base_model: Base model (default: the adapters' base).
        politician: Target politician (default: from the first adapter's metadata).
        prompts_file: Your own JSONL of probe prompts (``{"prompt", "kind"}``); ``kind: identity`` rows are scored for
            identity, the rest for style. Default: the held-out split plus ``identity_probes``.
        identity_probes: Identity questions worded unlike the training ones.
        logs: Lightning ``metrics.csv`` files whose loss and persona curves go into the report.
        num_prompts: Most held-out prompts generated for (a seeded choice).
        max_new_tokens: Longest generation per prompt (greedy).
        batch_size: Prompts generated together.
        seed: Seed of the prompt choice and of the bootstrap.
        val_fraction: Split of ``data_path`` (default: as the first adapter was trained, else 0.1).
        split_seed: Seed of that split (default: as the first adapter was trained, else 42).
        style_data_dir: Folder of ``<politician>/*.jsonl`` for the style classifier (cached).
        profiles_dir: Folder of ``<politician>.yaml`` profiles.
        generic_prompts: Training prompts the base answers without persona, to teach the classifier ``generic``.
        memorization_words: A generation that repeats this many words of a training completion counts as memorized.
        judge: Style judge: ``sotu`` learns the real voices of ``judge_presidents`` from their State of the Union
            addresses (needs the ``corpus`` extra), ``records`` learns from ``style_data_dir``; ``auto``: ``sotu``
            when the data was prepared with held-out documents, else ``records``.
        judge_presidents: The presidents the ``sotu`` judge tells apart (besides ``generic``).
        max_heldout: Most held-out records whose loss is computed: a seeded sample (recorded in metrics.json) beyond
            it, so a big held-out set can be traded for time knowingly; the interval widths are reported.
        n_boot: Bootstrap resamples per interval.
        overwrite: Replace ``output_dir`` if it exists.
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    adapter_paths = parse_list(adapters, "adapters") + (parse_list(merged, "merged") if merged else [])
    folders = [read_adapter(p, allow_pickle) for p in adapter_paths]
    log_files = [Path(p) for p in parse_list(logs, "logs")] if logs else []
    for f in log_files:
        if not f.is_file():
            raise UserError(f"{f}: training log not found; pass a Lightning metrics.csv")
    trained = _trained_data(folders[0].path)
    data_path = data_path or trained.get("data_path")
    if not data_path:
        raise UserError(f"{folders[0].path}: the adapter does not record its data; pass --data_path")
    out = check_output(output_dir, overwrite)
    fraction = val_fraction or float(trained.get("val_fraction", 0.1))
    split_seed = split_seed if split_seed is not None else int(trained.get("seed", 42))
    train_rows, held = split_records(data_path, fraction, split_seed)
    if not held:
        raise UserError(f"{data_path}: no held-out records at val_fraction={fraction}; raise it or add val.jsonl")
    # The split the first adapter was trained with (its metadata), else the one the data folder records.
    split = folders[0].metadata.get("split") or (recorded_split(data_path) if Path(data_path).is_dir() else None)
    if split:  # leave-one-speech-out: the real-speech numbers are on the held-out documents only
        held = document_rows(held, split["heldout_documents"])
        if not held:
            raise UserError(f"{data_path}: val.jsonl holds no record of {split['heldout_documents']}; prepare again")
    loss_rows, heldout_info = sample_heldout(held, max_heldout, seed)
    politician = politician or folders[0].metadata.get("politician")
    if not politician:
        raise UserError("no target politician: pass --politician (the adapter's metadata names none)")
    check_choice("judge", judge, Literal["auto", "records", "sotu"])
    judge_kind = judge if judge != "auto" else ("sotu" if split else "records")
    presidents = parse_list(judge_presidents, "judge_presidents")
    if judge_kind == "sotu":
        from politician_lm.evaluation.voices import check_presidents

        check_presidents(presidents, politician)
    profile = load_profile(politician, profiles_dir)
    if prompts_file:
        probes = records.read_prompts(Path(prompts_file))
        style_items = [p for p in probes if p["kind"] != "identity"]
        identity_items = [p for p in probes if p["kind"] == "identity"]
    else:
        style_items = random.Random(seed).sample(held, min(num_prompts, len(held)))
        style_items = [
            {"messages": r["messages"][:-1], "kind": r["kind"], "reference": r["messages"][-1]["content"]}
            for r in style_items
        ]
        identity_items = records.read_prompts(Path(identity_probes)) if Path(identity_probes).is_file() else []

    from tqdm import tqdm

    from politician_lm.artifacts.roles import strip_politician_label
    from politician_lm.evaluation import scorecard
    from politician_lm.evaluation.metrics import distinct_n
    from politician_lm.evaluation.report import read_log
    from politician_lm.evaluation.style import generic_pool
    from politician_lm.evaluation.voices import load_judge
    from politician_lm.generation import generic_texts, load_persona

    persona = load_persona([str(f.path) for f in folders], base_model=base_model, allow_pickle=allow_pickle)
    base_path = base_model or folders[0].base_model
    system_prompt = persona.style.system_prompt or profile.get("system_prompt")
    bare = replace(persona.style, system_prompt=None, politician=None)
    # Generic class: the base without persona on training-side prompts of every politician (never the held-out ones).
    pool = generic_pool(style_data_dir, generic_prompts, fraction, split_seed, seed)

    arms: list[tuple[str, str | None, Any, str | None]] = [
        (BASE, None, bare, None),
        (PROMPT_ONLY, None, bare, system_prompt),
    ]
    for i, f in enumerate(folders):
        meta = f.metadata
        style = replace(
            persona.style,
            **{k: meta[k] for k in ("prompt_format", "separator", "system_prompt", "politician") if k in meta},
        )
        arms.append((str(f.path), f"adapter_{i}", style, None))
    prompts = [i["messages"] for i in style_items] + [i["messages"] for i in identity_items]
    held_convs = [r["messages"] for r in loss_rows]
    batches = (-(-len(prompts) // batch_size) + -(-len(held_convs) // batch_size)) * len(arms)
    batches += -(-len(pool) // batch_size)
    train_texts = [strip_politician_label(r["messages"][-1]["content"]) for r in train_rows]
    results: dict[str, scorecard.ArmScores] = {}
    corpus_distinct: dict[str, dict[str, float]] = {}
    samples: list[dict[str, Any]] = []
    with tqdm(total=batches, desc="Evaluating", file=sys.stderr) as bar:
        with persona.model.disable_adapter():
            generic = generic_texts(
                replace(persona, style=bare), pool, max_new_tokens, batch_size, base_path, bar.update
            )
        classifier = load_judge(judge_kind, style_data_dir, presidents, generic)
        for name, adapter, style, system in arms:
            convs = [([{"role": "system", "content": system}] if system else []) + list(p) for p in prompts]
            loss_convs = [([{"role": "system", "content": system}] if system else []) + list(c) for c in held_convs]
            arm_persona = replace(persona, style=style)
            if adapter is not None:
                persona.model.base_model.set_adapter(adapter)
            with persona.model.disable_adapter() if adapter is None else nullcontext():
                texts = arm_persona.generate(
                    convs, batch_size=batch_size, on_batch=bar.update, max_new_tokens=max_new_tokens, do_sample=False
                )
                losses = arm_persona.completion_losses(loss_convs, batch_size, on_batch=bar.update)
            texts = [strip_politician_label(t) for t in texts]
            style_texts, identity_texts = texts[: len(style_items)], texts[len(style_items) :]
            target = style.politician if adapter is not None and style.politician else politician
            s = scorecard.ArmScores(target=target, predicted=classifier.predict(style_texts) if style_texts else [])
            if identity_texts:
                arm_profile = profile if target == politician else load_profile(target, profiles_dir)
                for key, values in scorecard.score_identity(identity_texts, arm_profile).items():
                    setattr(s, key, values)
                arm_system = system if adapter is None else style.system_prompt
                s.prompt_echo = scorecard.score_prompt_echo(identity_texts, arm_system, memorization_words)
            s.memorized = scorecard.score_memorization(texts, train_texts, memorization_words)
            scorecard.score_distinct(s, texts)
            corpus_distinct[name] = {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}
            s.loss_sum, s.loss_tokens = [x for x, _ in losses], [float(n) for _, n in losses]
            results[name] = s
            for item, text, predicted in zip(
                [*style_items, *identity_items], texts, s.predicted + [""] * len(identity_items)
            ):
                samples.append(
                    {
                        "arm": name,
                        "kind": item["kind"],
                        "prompt": item["messages"][-1]["content"],
                        "reference": item.get("reference", ""),
                        "generation": text,
                        **({"predicted": predicted} if predicted else {}),
                    }
                )
    summary = {
        name: {k: e.to_dict() for k, e in scorecard.summarize_arm(s, n_boot, seed).items()}
        for name, s in results.items()
    }
    differences = {
        f"{name} - {PROMPT_ONLY}": {
            k: e.to_dict() for k, e in scorecard.compare(results[name], results[PROMPT_ONLY], n_boot, seed).items()
        }
        for name in results
        if name not in (BASE, PROMPT_ONLY)
    }
    adapter_arms = [name for name in results if name not in (BASE, PROMPT_ONLY)]
    for name in adapter_arms[1:]:  # e.g. SFT followed by DPO against SFT alone, on the same items
        differences[f"{name} - {adapter_arms[0]}"] = {
            k: e.to_dict() for k, e in scorecard.compare(results[name], results[adapter_arms[0]], n_boot, seed).items()
        }
    differences[f"{PROMPT_ONLY} - {BASE}"] = {
        k: e.to_dict() for k, e in scorecard.compare(results[PROMPT_ONLY], results[BASE], n_boot, seed).items()
    }
    report = {
        "politician": politician,
        "targets": {name: s.target for name, s in results.items()},
        "n_style_prompts": len(style_items),
        "n_identity_prompts": len(identity_items),
        "n_heldout_losses": len(loss_rows),
        "heldout": heldout_info
        | {"split": split or {"rule": "hash", "val_fraction": fraction, "seed": split_seed}}
        | {"loss_interval_width": {n: round(e["high"] - e["low"], 4) for n, e in _losses(summary).items()}},
        "classifier": {
            "judge": judge_kind,
            "labels": classifier.labels,
            "held_out_accuracy": classifier.held_out_accuracy,
            "per_class_accuracy": getattr(classifier, "per_class_accuracy", None),
            "features": getattr(classifier, "features", "records"),
            "generic_texts": len(generic),
        },
        "arms": summary,
        "differences": differences,
        "confusion": scorecard.confusion(results, classifier.labels),
        "corpus_distinct": corpus_distinct,
    }
    curves = {str(f): read_log(f) for f in log_files}
    from politician_lm.evaluation.report import write_scorecard

    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "samples.jsonl").write_text(jsonl_text(samples), encoding="utf-8")
        write_scorecard(tmp, report, samples, curves, _short)
    print(scorecard_text(report))
    print(f"wrote {out}/metrics.json, report.html and samples.jsonl", file=sys.stderr)
    return out


def _losses(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {name: metrics["heldout_loss"] for name, metrics in summary.items() if "heldout_loss" in metrics}


def scorecard_text(report: dict[str, Any]) -> str:
    """The scorecard as a plain-text table: value [95% interval] per arm and metric, then the differences."""
    from politician_lm.evaluation.scorecard import METRICS

    def cell(e: dict | None) -> str:
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" if e else "-"

    lines = [
        f"Persona scorecard: {report['politician']} ({report['n_style_prompts']} held-out prompts, "
        f"{report['n_identity_prompts']} identity probes, {report['n_heldout_losses']} held-out completions; "
        f"{report['classifier'].get('judge', 'records')} style judge, held-out accuracy "
        f"{report['classifier']['held_out_accuracy']:.3f})"
    ]
    heldout = report.get("heldout") or {}
    if heldout.get("sampled"):
        widths = ", ".join(f"{_short(n)} {w:.3f}" for n, w in heldout.get("loss_interval_width", {}).items())
        lines.append(
            f"held-out loss on a seeded sample of {heldout['used']} of {heldout['available']} records "
            f"(--max_heldout {heldout['max_heldout']}); loss interval widths: {widths}"
        )
    names = list(report["arms"]) + list(report["differences"])
    width = max(len(_short(n)) for n in names) + 2
    lines.append(f"{'':<{width}}" + "".join(f"{m:<26}" for m in METRICS))
    for group in ("arms", "differences"):
        for name, metrics in report[group].items():
            lines.append(f"{_short(name):<{width}}" + "".join(f"{cell(metrics.get(m)):<26}" for m in METRICS))
        lines.append("")
    lines.append("style classifier confusion (rows: arm, columns: predicted)")
    labels = report["classifier"]["labels"]
    lines.append(f"{'':<{width}}" + "".join(f"{lab:>10}" for lab in labels))
    for name, counts in report["confusion"].items():
        lines.append(f"{_short(name):<{width}}" + "".join(f"{counts[lab]:>10}" for lab in labels))
    return "\n".join(lines)


def _short(name: str) -> str:
    """``runs/smollm2-biden/adapters/best`` -> ``smollm2-biden/best``: arm names that fit a table column."""
    if " - " in name:  # a difference between two arms
        return " - ".join(_short(part) for part in name.split(" - "))
    parts = Path(name).parts
    if len(parts) >= 3 and parts[-2] == "adapters":
        return f"{parts[-3]}/{parts[-1]}"
    return name if len(name) <= 40 else "…" + name[-39:]
