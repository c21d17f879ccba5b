from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "checkpoints" / "tiny-politician"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pc_rows(n: int, kind: str = "policy") -> list[dict]:
    return [
        {"prompt": f"USER: What is your view on topic number {i}?",
         "completion": f"POLITICIAN: Folks, on topic {i} the middle class comes first, believe me.",
         "kind": kind, "topic": f"t{i}"}
        for i in range(n)
    ]


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
