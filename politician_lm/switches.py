"""On/off environment switches: the inference fast paths (``model.packed_linear``, ``model.fused_lora``) and the
malloc trim (``allocator``). One spelling for all of them: 0, false, no or off turns a feature off."""

from __future__ import annotations

import os
from collections.abc import Mapping


def switched_off(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment variable ``name`` (of ``env``, default ``os.environ``) turns its feature off (0, false,
    no or off; unset: on)."""
    return (os.environ if env is None else env).get(name, "1").strip().lower() in ("0", "false", "no", "off")
