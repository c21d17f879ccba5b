"""The answers and losses of the arms no adapter changes (base and prompt-only), cached on disk across runs.

With every adapter switched off, what the base and prompt-only arms write and score depends on the base model, the
conversations they are given and how they are decoded and batched, never on the adapters being evaluated. So a
second ``evaluate`` of another adapter (another seed, another recipe) on the same held-out data reuses them. The key
covers everything they depend on: the base model's files, the arm's conversations (its system prompt included),
held-out completions and stance probes, its prompt style, the decoding and batch settings, how the model was built
(quantization, compute dtype, device, torch threads), the arithmetic switches (``switches.ARITHMETIC``), the versions
of torch, transformers, PEFT and bitsandbytes, and the source of this package (``cache_keys.code_key``), so any
change to them computes the arm afresh. Floats round-trip through JSON exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from politician_lm.artifacts.atomic import atomic_file
from politician_lm.evaluation.cache_keys import cache_root, code_key, update_with_base

__all__ = ["arm_key", "load_arm", "store_arm"]


def arm_key(base_model: str, inputs: dict[str, Any]) -> str:
    """The cache key of one arm: ``inputs`` (its conversations, style and settings, JSON-serialisable) with the base
    model's files, the libraries' versions and this package's source."""
    digest = hashlib.sha256(
        json.dumps(
            {"inputs": inputs, "base_model": base_model, **code_key()},
            sort_keys=True,
        ).encode()
    )
    update_with_base(digest, base_model)
    return digest.hexdigest()


def _path(key: str) -> Path:
    return cache_root() / "arms" / f"{key}.json"


def load_arm(key: str) -> dict[str, Any] | None:
    """The cached ``{"texts", "losses", "stance_losses"}`` of an arm, or None (not cached, or unreadable)."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not isinstance(cached, dict) or not {"texts", "losses", "stance_losses"} <= cached.keys():
        return None
    to_pairs = [tuple(pair) for pair in cached["losses"]], [tuple(pair) for pair in cached["stance_losses"]]
    return {"texts": cached["texts"], "losses": to_pairs[0], "stance_losses": to_pairs[1]}


def store_arm(key: str, texts: list[str], losses: list[Any], stance_losses: list[Any]) -> None:
    """Write an arm's answers and losses under ``key`` (atomically)."""
    payload = {"texts": texts, "losses": [list(p) for p in losses], "stance_losses": [list(p) for p in stance_losses]}
    with atomic_file(_path(key)) as tmp:
        Path(tmp).write_text(json.dumps(payload), encoding="utf-8")
