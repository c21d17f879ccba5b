"""On/off environment switches: the inference fast paths (``model.packed_linear``, ``model.fused_lora``) and the
malloc trim (``allocator``). One spelling for all of them: 0, false, no or off turns a feature off. The fast paths
change a model's rounding, so ``arithmetic`` (which of them are on) is part of evaluate's cache keys."""

from __future__ import annotations

import os
from collections.abc import Mapping


def switched_off(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment variable ``name`` (of ``env``, default ``os.environ``) turns its feature off (0, false,
    no or off; unset: on)."""
    return (os.environ if env is None else env).get(name, "1").strip().lower() in ("0", "false", "no", "off")


PACKED_LINEAR = "POLITICIAN_LM_PACKED_LINEAR"  # model.packed_linear: oneDNN's packed products on CPU
FUSED_LORA = "POLITICIAN_LM_FUSED_LORA"  # model.fused_lora: a LoRA update added with one addmm
# the switches that change a model's numbers (to float32 rounding); the allocator's change only memory
ARITHMETIC = (PACKED_LINEAR, FUSED_LORA)


def arithmetic(env: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Which of the ``ARITHMETIC`` switches are on, for a cache key: the same answers on and off differ in rounding."""
    return {name: not switched_off(name, env) for name in ARITHMETIC}
