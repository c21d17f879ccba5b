"""Adapters the serve tests share: two short real fits on the tiny model with different voices (same prompts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import fit_adapter, pc_rows


def other_rows(n: int) -> list[dict]:
    """The prompts of ``pc_rows`` answered in another voice, so the two adapters answer differently."""
    return [
        {
            "prompt": f"USER: What is your view on topic number {i}?",
            "completion": f"POLITICIAN: Tremendous, on number {i} we win bigly, nobody does it better.",
            "kind": "policy",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def voices(tmp_path_factory, tiny_path) -> tuple[Path, Path]:
    """``(a, b)``: plain-format adapters, ``a`` trained on ``pc_rows`` and ``b`` on ``other_rows``."""
    root = tmp_path_factory.mktemp("voices")
    a = fit_adapter(root / "a", tiny_path, pc_rows(12), max_steps=6, lora_r=8, lora_alpha=16, lr=2e-2)
    b = fit_adapter(root / "b", tiny_path, other_rows(12), max_steps=6, lora_r=8, lora_alpha=16, lr=2e-2)
    return a, b
