"""What ``evaluate``'s on-disk caches key on besides their own inputs: where they live, the base model's files, and
the code that computes them (the libraries' versions and this package's source).

``evaluation.arm_cache`` (the arms no adapter changes) and ``evaluation.generic`` (the judge's generic class) fold
the same ``code_key`` into their keys, so a library upgrade, a fix in this package or an arithmetic switch turned
off recomputes both alike.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from politician_lm.switches import arithmetic

__all__ = ["LIBRARIES", "WEIGHTS", "cache_root", "code_key", "update_with_base"]

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")
# every weights file transformers' from_pretrained reads from a folder: safetensors, pickle (with --allow_pickle),
# and the index of either when sharded
WEIGHTS = ("*.safetensors", "*.bin", "*.index.json")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/politician_lm`` (default ``~/.cache/politician_lm``): evaluate's caches."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "politician_lm"


@lru_cache(maxsize=1)
def _source_digest() -> str:
    """A hash of every Python file of this package: a code change invalidates every cached entry."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_key() -> dict[str, Any]:
    """The code a cached entry was computed with, for its key (JSON-serialisable): the versions of ``LIBRARIES``, the
    digest of this package's source, and which of ``switches.ARITHMETIC`` are on (``POLITICIAN_LM_PACKED_LINEAR=0``
    rounds otherwise, as other threads or CPU kernels do)."""
    return {"versions": _versions(), "source": _source_digest(), "switches": arithmetic()}


def update_with_base(digest: Any, base_model: str) -> None:
    """Fold what identifies a base model folder into ``digest``: its config and import record, and the name, size and
    modification time of every weights file (``WEIGHTS``: safetensors, pickle ``.bin`` and shard indexes), so weights
    rewritten in place (an export into the same folder) count as another base; for a hub id (or a missing folder),
    its name."""
    base = Path(base_model)
    if not base.is_dir():  # two hub models with one tokenizer and style would share a key
        digest.update(f"name:{base_model}".encode())
    for name in ("config.json", "politician_lm_import.json"):
        if (base / name).is_file():
            digest.update((base / name).read_bytes())
    for weights in sorted(path for pattern in WEIGHTS for path in base.glob(pattern)):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
