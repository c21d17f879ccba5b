"""``politician-lm merge``: combine LoRA adapters with weights through PEFT's ``add_weighted_adapter``.

Which methods are exact, for adapters with updates dW_i = scale_i * B_i A_i and weights w_i:

* ``cat`` (default): **exact**. The merged adapter stacks the ranks (r = sum r_i) and its update is
  sum_i w_i dW_i, to float rounding.
* ``svd``: exact only when the SVD rank (``--svd_rank``) reaches the rank of sum_i w_i dW_i; by default it keeps
  max(r_i) singular directions, an approximation.
* ``linear``: **not** a weighted sum of updates. It averages A and B separately (sqrt(w) on each), so the update
  has cross terms B_i A_j. Kept for compatibility; needs equal ranks.
* ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune``: deliberate approximations that trim, prune or
  randomly drop entries (``--density`` = share kept) to reduce interference; need equal ranks and weights >= 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from politician_lm.artifacts.adapter import (
    TRAINING_PROGRESS,
    AdapterFolder,
    layer_side,
    lora_shapes,
    read_adapter,
    resolve_base,
    write_metadata,
)
from politician_lm.artifacts.atomic import atomic_dir, atomic_write_text, check_output
from politician_lm.errors import UserError
from politician_lm.model.adapters import attach_adapter, check_fit, check_one_base
from politician_lm.values import check_choice, parse_list, parse_weights

MergeMethod = Literal["cat", "linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune"]
EQUAL_RANK = {"linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"}
NEEDS_DENSITY = {"ties", "dare_linear", "dare_ties", "magnitude_prune"}
EXACT = {"cat"}


def _modules(folder: AdapterFolder) -> str:
    tm = folder.target_modules
    return ",".join(sorted(tm)) if isinstance(tm, frozenset) else tm


def validate(
    adapters: list[str] | str,
    weights: list[float] | str,
    output_dir: str,
    method: MergeMethod,
    density: float | None,
    base_model: str | None,
    overwrite: bool,
    allow_pickle: bool,
) -> tuple[list[AdapterFolder], list[float], str]:
    """Every check that needs no weights: run before anything heavy."""
    check_choice("--method", method, MergeMethod)
    folders = [read_adapter(p, allow_pickle) for p in parse_list(adapters, "adapters")]
    ws = parse_weights(weights, len(folders), allow_negative=method not in NEEDS_DENSITY)
    if len({str(f.path.resolve()) for f in folders}) != len(folders):
        raise UserError("--adapters lists the same adapter twice; give each once and set its weight")
    check_one_base(folders)
    base = resolve_base(folders[0], base_model)
    for f in folders:
        if f.target_modules != folders[0].target_modules:
            raise UserError(
                f"{f.path}: targets {_modules(f)} but {folders[0].path} targets {_modules(folders[0])}; "
                "adapters must target the same modules"
            )
        if f.use_dora:
            raise UserError(
                f"{f.path}: DoRA adapters cannot be combined by weighted LoRA merging; apply them one at a time"
            )
    if method in EQUAL_RANK and len({f.rank for f in folders}) > 1:
        ranks = ", ".join(f"{f.path}: r={f.rank}" for f in folders)
        raise UserError(f"--method {method} needs adapters of equal rank ({ranks}); use --method cat or svd")
    if method in NEEDS_DENSITY:
        if density is None or not 0.0 < density <= 1.0:
            raise UserError(f"--method {method} needs --density in (0, 1], the share of entries kept (e.g. 0.5)")
    elif density is not None:
        raise UserError(f"--density applies only to {', '.join(sorted(NEEDS_DENSITY))}, not {method}")
    check_fit(base, folders, allow_pickle)
    check_output(output_dir, overwrite, inputs=[f.path for f in folders])
    return folders, ws, base


def _largest_svd_rank(folders: list[AdapterFolder]) -> int | None:
    """The narrowest side of any adapted layer, read from the adapters' headers: the most an svd merge can keep (None
    without safetensors weights). Above it PEFT saved an adapter whose tensors fit no base, or failed mid-merge."""
    return min((layer_side(part, shape) for f in folders for _, _, part, shape in lora_shapes(f)), default=None)


def model_card(
    folders: list[AdapterFolder], weights: list[float], method: str, density: float | None, base: str
) -> str:
    rows = "\n".join(f"| `{f.path}` | {w:g} | {f.rank} |" for f, w in zip(folders, weights))
    exact = "exact: its update is the weighted sum of the sources' updates" if method in EXACT else "approximate"
    return (
        f"---\nlibrary_name: peft\nbase_model: {base}\ntags: [politician-lm, lora, merged]\n---\n\n"
        f"# Merged LoRA adapter\n\nMade by `politician-lm merge --method {method}`"
        f"{f' --density {density:g}' if density is not None else ''} ({exact}).\n\n"
        f"Base model: `{base}`\n\n| source adapter | weight | rank |\n|---|---|---|\n{rows}\n"
    )


def merge(
    adapters: list[str] | str,
    weights: list[float] | str,
    output_dir: str,
    method: MergeMethod = "cat",
    density: float | None = None,
    svd_rank: int | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Combine LoRA adapters into one weighted adapter (PEFT add_weighted_adapter); ``cat`` is exact.

    Args:
        adapters: Adapter folders, as ``a,b`` or a list.
        weights: One weight per adapter, as ``0.7,0.3`` or a list.
        output_dir: Folder for the merged PEFT adapter (written atomically).
        method: cat (exact), linear, svd, ties, dare_linear, dare_ties or magnitude_prune.
        density: Share of entries kept by ties, dare_linear, dare_ties and magnitude_prune.
        svd_rank: Rank of the svd merge (default: the largest input rank).
        base_model: Base model the adapters were trained on (default: from the first adapter's config).
        overwrite: Replace ``output_dir`` if it exists.
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    if svd_rank is not None and (method != "svd" or svd_rank < 1):
        wrong = f"applies only to --method svd, not {method}"
        raise UserError(f"--svd_rank {wrong if method != 'svd' else f'must be at least 1, not {svd_rank}'}")
    folders, ws, base = validate(adapters, weights, output_dir, method, density, base_model, overwrite, allow_pickle)
    if svd_rank is not None and (most := _largest_svd_rank(folders)) is not None and svd_rank > most:
        raise UserError(f"--svd_rank {svd_rank}: an adapted layer is {most} wide, so an svd merge keeps at most {most}")
    from politician_lm.model.loading import empty_model

    skeleton = empty_model(base)  # merging reads only LoRA tensors: the base's weights are never written or read
    names = [f"source_{i}" for i in range(len(folders))]
    model = skeleton
    for name, folder in zip(names, folders):
        model = attach_adapter(model, folder.path, adapter_name=name)
    kwargs = {"density": density} if density is not None else {}
    if svd_rank is not None:
        kwargs["svd_rank"] = svd_rank
    merged = "default"  # PEFT saves the adapter named "default" at the folder's top level
    model.add_weighted_adapter(names, ws, merged, combination_type=method, **kwargs)
    cfg = model.peft_config[merged]
    if method == "cat" and cfg.use_rslora:
        # the sources' scales are folded into the stacked A; the merged adapter must apply scale 1 (alpha = r)
        cfg.use_rslora = False
    cfg.base_model_name_or_path = base
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(str(tmp), selected_adapters=[merged])
        atomic_write_text(tmp / "README.md", model_card(folders, ws, method, density, base))
        first = folders[0].path
        for extra in first.iterdir():  # tokenizer and generation settings of the first source
            if extra.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
                (tmp / extra.name).write_bytes(extra.read_bytes())
        # the prompt format and base of the first source; its training progress describes another adapter
        meta = {
            k: v
            for k, v in folders[0].metadata.items()
            if k not in (*TRAINING_PROGRESS, "merged_from", "merge_method", "merge_density")
        }
        meta.update(
            {
                "merged_from": [{"path": str(f.path), "weight": w} for f, w in zip(folders, ws)],
                "merge_method": method,
                "merge_density": density,
            }
        )
        write_metadata(tmp, meta)
    print(f"merged {len(folders)} adapters ({method}) into {output_dir}")
    return Path(output_dir)
