"""Adapters the serve tests share: two short real fits on the tiny model with different voices (same prompts), and
a registry of four personas over them (with a chat-format one and a weighted mix) for the HTTP tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, fit_adapter, pc_rows


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


@pytest.fixture(scope="session")
def registry(tmp_path_factory, tiny_path, voices):
    """Three tiny personas: two plain-format adapters with different voices, one chat-format adapter with the Biden
    system prompt, and a weighted mix of the two plain ones."""
    root = tmp_path_factory.mktemp("serve")
    a, b = voices
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "Folks, jobs."}]}
        for i in range(8)
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # data/profiles
        c = fit_adapter(
            root / "c", tiny_path, rows, max_steps=6, lr=2e-2, data_kw={"prompt_format": "chat", "politician": "biden"}
        )
    greedy = {"max_new_tokens": 24, "do_sample": False}
    entries = {
        "alpha": {"base_model": tiny_path, "adapters": [{"path": str(a), "weight": 1.0}], "generation": greedy},
        "beta": {"base_model": tiny_path, "adapters": [{"path": str(b), "weight": 1.0}], "generation": greedy},
        "gamma": {"base_model": tiny_path, "adapters": [{"path": str(c), "weight": 1.0}], "generation": greedy},
        "mix": {
            "base_model": tiny_path,
            "adapters": [{"path": str(a), "weight": 0.7}, {"path": str(b), "weight": 0.6}],
            "generation": greedy,
        },
    }
    path = root / "models.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path
