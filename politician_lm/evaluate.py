"""``politician-lm evaluate``: the persona metrics for the bare base model and each adapter, on the same prompts."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import yaml

from politician_lm.adapters.files import parse_list, read_adapter
from politician_lm.data import records
from politician_lm.data.profiles import load_profile
from politician_lm.errors import UserError
from politician_lm.evaluation.persona import eval_items, sample_rows, score
from politician_lm.io import atomic_dir, check_output


def held_out(data_path: str, val_fraction: float, seed: int) -> tuple[list[list[dict]], list[str]]:
    """The validation side of ``data_path``, split exactly as the DataModule splits it."""
    files = records.discover(data_path)
    records.validate(files)
    rows = [records.to_conversation(obj) for f in (files.val or files.train) for _, obj in records.iter_json_lines(f)]
    if not files.val:
        rows = [r for r in rows if records.split_bucket(r["messages"], seed) < val_fraction]
    if not rows:
        raise UserError(f"{data_path}: no held-out records at val_fraction={val_fraction}; raise it or add val.jsonl")
    return [r["messages"] for r in rows], [r["kind"] for r in rows]


def _training_split(adapter: Path) -> tuple[float, int]:
    cfg_file = adapter / "training_config.yaml"
    data = (yaml.safe_load(cfg_file.read_text()) or {}).get("data", {}) if cfg_file.is_file() else {}
    return float(data.get("val_fraction", 0.1)), int(data.get("seed", 42))


def evaluate(
    adapters: list[str] | str,
    data_path: str,
    output_dir: str,
    merged: list[str] | str | None = None,
    base_model: str | None = None,
    politician: str | None = None,
    logs: list[str] | str | None = None,
    num_prompts: int = 24,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    seed: int = 0,
    val_fraction: float | None = None,
    split_seed: int | None = None,
    style_data_dir: str = "data",
    profiles_dir: str = "data/profiles",
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Score the bare base model and each adapter on the same held-out prompts; write metrics.json and report.html.

    Args:
        adapters: Adapter folders, as ``a,b`` or a list.
        data_path: JSONL file or folder; its held-out (validation) records are the prompts.
        output_dir: Folder for metrics.json, report.html, plots and samples (written atomically).
        merged: Merged adapter folders (from ``politician-lm merge``) to score as well.
        base_model: Base model (default: the adapters' base).
        politician: Profile name for identity and style metrics (default: from the adapter's metadata).
        logs: Lightning ``metrics.csv`` files whose loss and persona curves go into the report.
        num_prompts: Held-out prompts (a fixed, seeded choice; identity prompts first).
        max_new_tokens: Longest generation per prompt (greedy).
        batch_size: Prompts generated together.
        seed: Seed of the prompt choice.
        val_fraction: Split of ``data_path`` (default: as the first adapter was trained, else 0.1).
        split_seed: Seed of that split (default: as the first adapter was trained, else 42).
        style_data_dir: Folder of ``<politician>/*.jsonl`` for the style classifier (cached).
        profiles_dir: Folder of ``<politician>.yaml`` profiles.
        overwrite: Replace ``output_dir`` if it exists.
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    adapter_paths = parse_list(adapters, "adapters") + (parse_list(merged, "merged") if merged else [])
    folders = [read_adapter(p, allow_pickle) for p in adapter_paths]
    log_files = [Path(p) for p in parse_list(logs, "logs")] if logs else []
    for f in log_files:
        if not f.is_file():
            raise UserError(f"{f}: training log not found; pass a Lightning metrics.csv")
    out = check_output(output_dir, overwrite)
    trained_fraction, trained_seed = _training_split(folders[0].path)
    convs, kinds = held_out(data_path, val_fraction or trained_fraction, split_seed if split_seed is not None else trained_seed)
    items = eval_items(convs, kinds, num_prompts, seed)
    politician = politician or folders[0].metadata.get("politician")
    profile = load_profile(politician, profiles_dir) if politician else None

    from tqdm import tqdm

    from politician_lm.evaluation.report import read_log, write_report
    from politician_lm.evaluation.style import load_or_train
    from politician_lm.generation import load_persona

    classifier = load_or_train(style_data_dir) if politician else None
    persona = load_persona([str(f.path) for f in folders], base_model=base_model, allow_pickle=allow_pickle)
    names = ["base"] + [str(f.path) for f in folders]
    convs_in = [list(i.messages) for i in items]
    metrics: dict[str, dict[str, float]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    with tqdm(total=len(names) * -(-len(convs_in) // batch_size), desc="Evaluating", file=sys.stderr) as bar:
        for index, name in enumerate(names):
            if index:
                persona.model.base_model.set_adapter(f"adapter_{index - 1}")
            with persona.model.disable_adapter() if index == 0 else nullcontext():  # "base": no adapter at all
                generations = persona.generate(convs_in, batch_size=batch_size, on_batch=bar.update,
                                               max_new_tokens=max_new_tokens, do_sample=False)
            metrics[name] = score(items, generations, classifier, politician, profile)
            samples[name] = sample_rows(items, generations)
    curves = {str(f): read_log(f) for f in log_files}
    with atomic_dir(out) as tmp:
        write_report(tmp, metrics, samples, curves, f"Persona evaluation: {politician or 'model'}")
        (tmp / "samples.jsonl").write_text("".join(json.dumps({"model": m, **s}, ensure_ascii=False) + "\n"
                                                   for m, ss in samples.items() for s in ss), encoding="utf-8")
    print(f"wrote {out}/metrics.json and {out}/report.html ({len(items)} prompts, {len(names)} models)", file=sys.stderr)
    return out
