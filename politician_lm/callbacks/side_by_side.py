"""``SideBySide``: at the end of fit, print what the base model says with only the persona's system prompt
next to what the trained adapter says, for a few held-out prompts (greedy, same prompt for both)."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as L
import torch

from politician_lm.artifacts.jsonl import write_jsonl
from politician_lm.artifacts.roles import strip_role_label
from politician_lm.callbacks.contracts import AdapterModule, PromptData, require
from politician_lm.evaluation.persona import eval_items
from politician_lm.inference import Persona
from politician_lm.model.loading import dequantized


def side_by_side_table(rows: list[dict[str, str]], left: str, right: str, width: int | None = None) -> str:
    """A plain-text table: for each row its prompt across the page, then ``left`` and ``right`` in two columns."""
    width = width or min(shutil.get_terminal_size((120, 24)).columns, 140)
    col = (width - 3) // 2
    rule = "=" * width
    lines = [rule, f"{left:<{col}} | {right}", rule]
    for row in rows:
        lines += textwrap.wrap(f"PROMPT: {row['prompt']}", width) or [""]
        lines.append("-" * width)
        a = textwrap.wrap(" ".join(row[left].split()), col) or [""]
        b = textwrap.wrap(" ".join(row[right].split()), col) or [""]
        for i in range(max(len(a), len(b))):
            lines.append(f"{(a[i] if i < len(a) else ''):<{col}} | {b[i] if i < len(b) else ''}")
        lines.append(rule)
    return "\n".join(lines)


class SideBySide(L.Callback):
    """After fit: held-out answers of the base given the persona system prompt beside the adapter's answers."""

    PROMPT_ONLY = "base + persona prompt"
    ADAPTER = "adapter"

    def __init__(self, num_prompts: int = 4, max_new_tokens: int = 64, seed: int = 1) -> None:
        """
        Args:
            num_prompts: Held-out prompts to show (a seeded choice from the validation split).
            max_new_tokens: Longest answer per prompt (greedy decoding).
            seed: Seed of the prompt choice.
        """
        self.num_prompts, self.max_new_tokens, self.seed = num_prompts, max_new_tokens, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            require(pl_module, AdapterModule, type(self).__name__, "LightningModule")
            require(trainer.datamodule, PromptData, type(self).__name__, "DataModule")

    @torch.no_grad()
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.interrupted:
            return
        dm: PromptData = trainer.datamodule
        items = eval_items(*dm.conversations("val"), self.num_prompts, self.seed)
        items = [items[-1], *items[:-1]] if len(items) > 1 else items  # a policy/style prompt first, identity later
        model = pl_module.model
        was_training = model.training
        model.eval()
        persona = Persona(model=model, tokenizer=dm.tokenizer, style=dm.style)
        convs = [list(i.messages) for i in items]
        with dequantized(model):  # on CPU the 4-bit base de-quantized once, as ``generate`` runs it
            with model.disable_adapter():
                base = persona.generate(convs, max_new_tokens=self.max_new_tokens, do_sample=False)
            tuned = persona.generate(convs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if was_training:
            model.train()
        rows = [
            {
                "prompt": strip_role_label(i.messages[-1]["content"]),
                "kind": i.kind,
                self.PROMPT_ONLY: b,
                self.ADAPTER: t,
            }
            for i, b, t in zip(items, base, tuned)
        ]
        print("\n" + side_by_side_table(rows, self.PROMPT_ONLY, self.ADAPTER), file=sys.stdout, flush=True)
        out = Path(trainer.default_root_dir) / "side_by_side.jsonl"
        write_jsonl(out, rows)
        print(f"(also in {out}; greedy, step {trainer.global_step})", flush=True)
