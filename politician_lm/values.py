"""Command-line values that several verbs share: comma-separated lists (the old flags' style) and weights."""

from __future__ import annotations

import math

from politician_lm.errors import UserError


def parse_list(value: list | str, what: str) -> list[str]:
    """Accept ``a,b`` (the old flag style) or a list."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [v for v in items if v]
    if not items:
        raise UserError(f"--{what} is empty; give at least one value")
    return items


def parse_weights(value: list | str, n_adapters: int, allow_negative: bool) -> list[float]:
    weights = []
    for item in parse_list(value, "weights"):
        try:
            w = float(item)
        except ValueError:
            raise UserError(f"--weights: {item!r} is not a number") from None
        if not math.isfinite(w):
            raise UserError(f"--weights: {item!r} is not a finite number")
        if w < 0 and not allow_negative:
            raise UserError(f"--weights: {item} is negative; this method needs weights >= 0")
        weights.append(w)
    if len(weights) != n_adapters:
        raise UserError(f"--weights has {len(weights)} values for {n_adapters} adapters; give one weight per adapter")
    return weights


def check_choice(name: str, value: object, choices: object) -> None:
    """``value`` is one of the ``Literal`` type ``choices`` (the same type jsonargparse checks on the command line;
    this covers Python callers). One line naming the option and its choices otherwise."""
    from typing import get_args

    allowed = get_args(choices)
    if value not in allowed:
        raise UserError(f"unknown {name} {value!r}; use one of {', '.join(map(str, allowed))}")
