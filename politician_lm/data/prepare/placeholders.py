"""The ``{name}`` placeholders of a prompt or answer template (``--table_prompt``, the identity template)."""

from __future__ import annotations

import string

from politician_lm.errors import UserError


def placeholders(template: str, what: str) -> list[str]:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise UserError(f"{what}: malformed template {template!r} ({e}); write placeholders as {{column}}") from None
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise UserError(f"{what}: placeholder {{{bad[0]}}} in {template!r} must be a column name such as {{topic}}")
    return names
