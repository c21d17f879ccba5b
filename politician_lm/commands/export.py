"""``politician-lm export``: merge an adapter into its base model and write a standard Hugging Face model folder.

An adapter trained on a quantized (NF4/FP4/int8) base is merged into the de-quantized weights it was trained
against: the base is loaded with the training quantization, de-quantized, and only then the LoRA update is
added. The result is not re-quantized; it is saved in the chosen dtype as safetensors with config, tokenizer,
generation config and the prompt-format metadata that ``generate`` and ``chat`` read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from politician_lm.artifacts.adapter import (
    check_base_model,
    check_fits_base,
    read_adapter,
    resolve_base,
    write_metadata,
)
from politician_lm.artifacts.atomic import atomic_dir, atomic_write_text, check_output
from politician_lm.model.adapters import attach_adapter
from politician_lm.values import check_choice

ExportDtype = Literal["float32", "float16", "bfloat16"]


def export(
    adapter: str,
    output_dir: str,
    dtype: ExportDtype = "float32",
    base_model: str | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Merge an adapter into its base model and save a plain Hugging Face model folder (safetensors).

    Args:
        adapter: Adapter folder (e.g. runs/demo-biden/adapters/best).
        output_dir: Folder for the merged model (written atomically).
        dtype: Dtype of the saved weights: float32, float16 or bfloat16.
        base_model: Base model the adapter was trained on (default: from the adapter's config); give it to use a
            local copy of that model.
        overwrite: Replace ``output_dir`` if it exists.
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    folder = read_adapter(adapter, allow_pickle)
    base = resolve_base(folder, base_model)  # an explicit base (e.g. a local copy of the hub model) wins
    check_base_model(base, allow_pickle)
    check_fits_base(folder, base)
    check_choice("--dtype", dtype, ExportDtype)
    out = check_output(output_dir, overwrite, inputs=[folder.path, base])

    from transformers import AutoTokenizer, GenerationConfig

    from politician_lm.model.loading import load_base_model

    quantization = folder.metadata.get("quantization") or "none"
    model = load_base_model(base, quantization, torch.float32, torch.device("cpu"), allow_pickle=allow_pickle)
    if quantization != "none":
        model = model.dequantize()  # the exact weights training saw, as float32 nn.Linear layers
    model = attach_adapter(model, folder.path).merge_and_unload()
    model = model.to(getattr(torch, dtype))
    model.config.use_cache = True
    tok_source = folder.path if (folder.path / "tokenizer_config.json").is_file() else base
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(tok_source)).save_pretrained(str(tmp))
        gen_file = folder.path / "generation_config.json"
        if gen_file.is_file():
            GenerationConfig.from_pretrained(str(folder.path)).save_pretrained(str(tmp))
        meta = {**folder.metadata, "exported_from": str(folder.path), "export_dtype": dtype, "quantization": "none"}
        write_metadata(tmp, meta)
        atomic_write_text(
            tmp / "README.md",
            f"---\nbase_model: {base}\ntags: [politician-lm, merged]\n---\n\n"
            f"# {meta.get('politician') or 'Persona'} model\n\nBase `{base}` with adapter "
            f"`{folder.path}` merged in (trained with {quantization} base weights, merged into their "
            f"de-quantized values), saved as {dtype}.\n",
        )
    print(f"exported {folder.path} merged into {base} to {out} ({dtype})")
    return out
