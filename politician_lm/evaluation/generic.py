"""The style judge's ``generic`` class: what the base model writes without any persona, cached on disk.

The texts depend only on the base model and how it was loaded, the prompts, the prompt style and the length (and
the code: the libraries' versions and this package's source, ``cache_keys.code_key``, as the arm cache's key), so
``evaluate`` and the fit-time ``PersonaEvaluation`` generate them once per base and reuse them across runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from politician_lm.artifacts.atomic import atomic_file
from politician_lm.evaluation.cache_keys import cache_root, code_key, update_with_base

__all__ = ["generic_texts"]


class _Generator(Protocol):
    """What ``generic_texts`` needs of ``inference.Persona`` (evaluation sits below inference)."""

    style: Any  # a PromptStyle: its to_dict() is part of the cache key

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        streamer: Any = None,
        batch_size: int | None = None,
        on_batch: Callable[[int], Any] | None = None,
        **generation_settings: Any,
    ) -> list[str]: ...


def _generic_cache_dir() -> Path:
    return cache_root() / "generic"


def generic_texts(
    persona: _Generator,
    prompts: list[list[dict]],
    max_new_tokens: int,
    batch_size: int,
    base_model: str,
    on_batch: Callable[[int], Any] | None = None,
    repetition_penalty: float = 1.0,
    build: dict[str, Any] | None = None,
    use_cache: bool = True,
) -> list[str]:
    """What ``persona`` writes for ``prompts`` (greedy, with ``repetition_penalty``), cached by base model, how it was
    loaded (``build``: quantization, dtype, device, ...; a 4-bit base de-quantized writes other texts than the full
    one), prompts, style, length and penalty, and the code (``cache_keys.code_key``: library versions, this package's
    source). ``use_cache`` false computes them afresh (and stores them). ``on_batch(n)`` counts the batches done,
    all of them at once when the texts come from the cache, so a progress bar over them completes either way.

    Call it with the adapters switched off and a style without a persona system prompt: the texts are the base
    model's own voice, the style classifier's ``generic`` class.
    """
    key = [prompts, persona.style.to_dict(), max_new_tokens] + ([repetition_penalty] if repetition_penalty != 1 else [])
    key += ([build] if build else []) + [code_key()]  # the libraries and this package's source, as the arm cache's
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
    update_with_base(digest, base_model)
    path = _generic_cache_dir() / f"{digest.hexdigest()}.json"
    if use_cache and path.is_file():
        try:
            texts = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pass
        else:
            if on_batch is not None and prompts:  # the batches generate would have run count as done
                on_batch(-(-len(prompts) // (batch_size or len(prompts))))
            return texts
    texts = persona.generate(
        prompts,
        batch_size=batch_size,
        on_batch=on_batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        repetition_penalty=repetition_penalty,
    )
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(texts), encoding="utf-8")
    return texts
