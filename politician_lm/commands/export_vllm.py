"""``politician-lm export-vllm``: the personas as vLLM serves LoRA adapters, for a deployment past one machine.

One folder, written atomically: per persona the one adapter ``serve`` makes of it (``model.adapters``: a weighted
mix folded by PEFT's exact ``cat``, a single adapter with its weight moved into its A matrices), one chat template
that renders every persona's prompt as ``serve`` does (``serve.vllm_template``), ``serve.sh`` with the ``vllm
serve`` line that serves them all, and a README. Every check runs before anything heavy, and no base weights are
loaded: folding reads only LoRA tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from politician_lm.artifacts.adapter import TRAINING_PROGRESS, AdapterFolder, read_adapter, write_metadata
from politician_lm.artifacts.atomic import atomic_dir, atomic_write_text, check_output
from politician_lm.commands._vllm_files import VLLM_RANKS, Exported, adapter_card, readme, serve_script
from politician_lm.commands.serve import REGISTRY
from politician_lm.data.templates import PromptStyle
from politician_lm.errors import UserError

FOLDED = "default"  # PEFT saves the adapter of this name at the folder's top level


def servable_rank(name: str, folders: list[AdapterFolder]) -> int:
    """The rank of the persona's one adapter (the ranks of a mix stack); refuses what vLLM does not load."""
    for f in folders:  # the settings as saved: no peft import before a refusal
        saved, bias = f.setting("modules_to_save"), f.setting("bias")
        why = (
            "is a DoRA adapter"
            if f.use_dora
            else f"also saves whole modules ({', '.join(sorted(saved))})"
            if saved
            else f"trains biases (bias={bias!r})"
            if (bias or "none") != "none"
            else None
        )
        if why:
            raise UserError(f"persona {name!r}: {f.path} {why}, which vLLM does not serve; retrain it as plain LoRA")
    rank = sum(max([f.rank, *(f.setting("rank_pattern") or {}).values()]) for f in folders)
    if rank > VLLM_RANKS[-1]:
        raise UserError(
            f"persona {name!r}: its one adapter has rank {rank} (the sum of its adapters' ranks); vLLM "
            f"serves ranks up to {VLLM_RANKS[-1]}, so serve fewer adapters in that mix"
        )
    return rank


def base_reference(base: str) -> str:
    """The base as the exported files name it: a local folder by its absolute path (``serve.sh`` runs from the
    export folder), a hub id as it is."""
    return str(Path(base).resolve()) if Path(base).is_dir() else base


def _base_samples(base: str) -> bool:
    """Whether a persona that does not say samples on ``base`` (its ``generation_config.json``, as ``serve``
    reads it); without one, ``generate`` is greedy."""
    from transformers import GenerationConfig

    try:
        return bool(GenerationConfig.from_pretrained(base).do_sample)
    except OSError:
        return False


def _fold(model: Any, paths: list[str], weights: list[float]) -> Any:
    """``model`` with the persona's adapters attached at their weights as the one adapter ``FOLDED``."""
    from politician_lm.model.adapters import adapter_names, attach_weighted, bake_weight, fold_weighted

    if len(paths) == 1:
        model = attach_weighted(model, paths, weights, [FOLDED])
        bake_weight(model, FOLDED)
        return model
    names = adapter_names(len(paths), prefix="source")
    model = attach_weighted(model, paths, weights, names)
    fold_weighted(model, names, FOLDED)
    return model


def _metadata(first: AdapterFolder, paths: list[str], weights: list[float], base: str) -> dict[str, Any]:
    """The first adapter's ``politician_lm.json`` (its prompt format, quantization), its base the exported one and
    the adapters folded into it in ``merged_from``, so ``serve`` and ``generate`` read the folder as they read any."""
    drop = (*TRAINING_PROGRESS, "merged_from", "merge_method", "merge_density", "base_model_path")
    meta = {k: v for k, v in first.metadata.items() if k not in drop}
    meta.update(base_model=base, merged_from=[{"path": p, "weight": w} for p, w in zip(paths, weights)])
    meta["merge_method"] = "cat"
    if Path(base).is_dir():
        meta["base_model_path"] = base
    return meta


def export_vllm(
    output_dir: str,
    personas: list[str] | str | None = None,
    registry: str = REGISTRY,
    adapters: list[str] | str | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Write the personas for vLLM: one folded LoRA adapter each, one chat template, and the vllm serve line.

    Args:
        output_dir: Folder to write (atomically): one adapter folder per persona, chat_template.jinja, serve.sh
            and README.md.
        personas: Registry names to export, as ``biden,trump`` or a list (default: every registry persona whose
            adapter folders exist; they must share one base model).
        registry: Model registry YAML mapping persona names to base model, adapters with weights, generation settings.
        adapters: Export these adapter folders instead of the registry, as ``NAME=PATH`` (or ``PATH``: named by its
            politician), comma-separated or a list.
        base_model: Base model for every persona (default: the registry's, else the adapters' own), read here for
            its config and tokenizer; serve.sh names it, and ``BASE=...`` there names it where vLLM runs.
        overwrite: Replace ``output_dir`` if it exists.
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded (the export is safetensors).
    """
    from politician_lm.serve.personas import resolve_specs

    specs = resolve_specs(personas, registry, adapters, base_model, allow_pickle)
    folders = {s.name: [read_adapter(p, allow_pickle) for p in s.adapters] for s in specs}
    ranks = {s.name: servable_rank(s.name, folders[s.name]) for s in specs}
    out = check_output(output_dir, overwrite, inputs=[f.path for fs in folders.values() for f in fs])

    from politician_lm.model.loading import empty_model, generation_defaults, load_tokenizer
    from politician_lm.serve.vllm_template import persona_template

    base = specs[0].base_model
    first = folders[specs[0].name][0]
    tokenizer = load_tokenizer(first.path, base)  # serve's: the first persona's, for every persona
    styles = {s.name: PromptStyle.from_metadata(folders[s.name][0].metadata) for s in specs}
    template = persona_template(styles, tokenizer)
    ref = base_reference(base)
    samples = _base_samples(base)
    exported = [
        Exported(
            s,
            ranks[s.name],
            styles[s.name],
            {"do_sample": samples, **generation_defaults(Path(s.adapters[0])), **s.generation},  # as serve has them
            str(folders[s.name][0].metadata.get("quantization") or "none"),
        )
        for s in specs
    ]
    model = empty_model(base)
    with atomic_dir(out) as tmp:
        for e in exported:
            s = e.spec
            model = _fold(model, s.adapters, s.weights)
            model.peft_config[FOLDED].base_model_name_or_path = ref
            model.save_pretrained(str(tmp / s.name), selected_adapters=[FOLDED])
            write_metadata(tmp / s.name, _metadata(folders[s.name][0], s.adapters, s.weights, ref))
            atomic_write_text(tmp / s.name / "README.md", adapter_card(e, ref))
            model = model.unload()  # the bare skeleton again, for the next persona
        atomic_write_text(tmp / "chat_template.jinja", template)
        atomic_write_text(tmp / "serve.sh", serve_script(ref, [s.name for s in specs], max(ranks.values())))
        atomic_write_text(tmp / "README.md", readme(exported, ref, registry if not adapters else None))
    print(f"exported {len(specs)} personas for vLLM to {out}: sh {out / 'serve.sh'}")
    return out
