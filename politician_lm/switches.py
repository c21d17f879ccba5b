"""On/off environment switches: the inference fast paths (``model.packed_linear``, ``model.fused_lora``) and the
malloc trim (``allocator``). One spelling for all of them: 0, false, no or off turns a feature off; 1, true, yes or on
(or unset) leaves it on. The fast paths change a model's rounding, so ``arithmetic`` (which of them are on) is part of
evaluate's cache keys."""

from __future__ import annotations

import os
from collections.abc import Mapping

OFF = ("0", "false", "no", "off")
ON = ("1", "true", "yes", "on")


def switched_off(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment variable ``name`` (of ``env``, default ``os.environ``) turns its feature off (0, false,
    no or off; unset: on)."""
    return (os.environ if env is None else env).get(name, "1").strip().lower() in OFF


def switch_problem(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A one-line message where ``name`` holds a value that is neither an on nor an off spelling, else None."""
    value = (os.environ if env is None else env).get(name, "1")
    if value.strip().lower() in (*ON, *OFF, ""):
        return None
    return f"{name}={value!r}: use 0, false, no or off to turn it off, or 1, true, yes or on (the default)"


PACKED_LINEAR = "POLITICIAN_LM_PACKED_LINEAR"  # model.packed_linear: oneDNN's packed products on CPU
FUSED_LORA = "POLITICIAN_LM_FUSED_LORA"  # model.fused_lora: a LoRA update added with one addmm
# the switches that change a model's numbers (to float32 rounding); the allocator's change only memory
ARITHMETIC = (PACKED_LINEAR, FUSED_LORA)


def arithmetic(env: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Which of the ``ARITHMETIC`` switches are on, for a cache key: the same answers on and off differ in rounding."""
    return {name: not switched_off(name, env) for name in ARITHMETIC}
