"""``SideBySide``: at the end of fit, print what the base model says with only the persona's system prompt
next to what the trained adapter says, for a few held-out prompts (greedy, same prompt for both), under a row with
each side's agreement with the profile's held-out stance statements (``evaluation.stances``), or, where the data was
prepared with a validation band of statements (``prepare --stance_val_fraction``), with those instead: a fit made to
choose a recipe by the band does not show the held-out statements."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as L
import torch

from politician_lm.artifacts.jsonl import write_jsonl
from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.roles import strip_role_label
from politician_lm.artifacts.stances import Stance, heldout_stances
from politician_lm.callbacks.contracts import AdapterModule, PromptData, require
from politician_lm.callbacks.export import METADATA_FILE, AdapterExport, best_step
from politician_lm.data import records
from politician_lm.evaluation.inputs import val_stances
from politician_lm.evaluation.persona import eval_items
from politician_lm.evaluation.stances import probe
from politician_lm.inference import Persona
from politician_lm.model.loading import adapter_state, dequantized


def side_by_side_table(
    rows: list[dict[str, str]], left: str, right: str, width: int | None = None, summary: tuple[str, str] | None = None
) -> str:
    """A plain-text table: for each row its prompt across the page, then ``left`` and ``right`` in two columns;
    ``summary`` is a line for each column under the header."""
    width = width or min(shutil.get_terminal_size((120, 24)).columns, 140)
    col = (width - 3) // 2
    rule = "=" * width
    lines = [rule, f"{left:<{col}} | {right}"]
    if summary:
        lines.append(f"{summary[0]:<{col}} | {summary[1]}")
    lines.append(rule)
    for row in rows:
        lines += textwrap.wrap(f"PROMPT: {row['prompt']}", width) or [""]
        lines.append("-" * width)
        a = textwrap.wrap(" ".join(row[left].split()), col) or [""]
        b = textwrap.wrap(" ".join(row[right].split()), col) or [""]
        for i in range(max(len(a), len(b))):
            lines.append(f"{(a[i] if i < len(a) else ''):<{col}} | {b[i] if i < len(b) else ''}")
        lines.append(rule)
    return "\n".join(lines)


STANCE_ROW = "held-out stance agreement (statements never trained on)"
VAL_STANCE_ROW = "validation stance agreement (the data's val.jsonl statements, never trained on)"


class SideBySide(L.Callback):
    """After fit: held-out answers of the base given the persona system prompt beside the adapter's answers."""

    PROMPT_ONLY = "base + persona prompt"
    ADAPTER = "adapter"

    def __init__(
        self,
        num_prompts: int = 4,
        max_new_tokens: int = 64,
        seed: int = 1,
        stances: bool = True,
        repetition_penalty: float = 1.0,
    ) -> None:
        """
        Args:
            num_prompts: Held-out prompts to show (a seeded choice from the held-out documents, ``test.jsonl``, of a
                prepared folder that has them; else from the validation split).
            max_new_tokens: Longest answer per prompt (greedy decoding).
            seed: Seed of the prompt choice.
            stances: Also show each side's agreement with the profile's held-out stance statements (read from
                likelihoods, a second or two; skipped when the profile has none); with the statements of the data's
                validation band instead where it has one (``prepare --stance_val_fraction``).
            repetition_penalty: Both sides' greedy decoding with this penalty on tokens already in the answer (1.2
                is what ``chat``'s presets use; 1.0: none, as ``evaluate`` decodes by default).
        """
        self.num_prompts, self.max_new_tokens, self.seed, self.stances = num_prompts, max_new_tokens, seed, stances
        self.repetition_penalty = repetition_penalty

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            require(pl_module, AdapterModule, type(self).__name__, "LightningModule")
            require(trainer.datamodule, PromptData, type(self).__name__, "DataModule")

    @torch.no_grad()
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.interrupted:
            return
        dm: PromptData = trainer.datamodule
        items = eval_items(*dm.conversations("test"), self.num_prompts, self.seed)  # the held-out documents
        items = [items[-1], *items[:-1]] if len(items) > 1 else items  # a policy/style prompt first, identity later
        model = pl_module.model
        was_training = model.training
        model.eval()
        persona = Persona(model=model, tokenizer=dm.tokenizer, style=dm.style)
        convs = [list(i.messages) for i in items]
        held, val = self._stances(dm)
        scores = []

        best, step = self._best(trainer)
        shown = f"{best} (step {step}; the final weights are step {trainer.global_step})" if best else f"step {step}"
        with dequantized(model), adapter_state(model, best):  # on CPU the 4-bit base de-quantized once, as
            with model.disable_adapter():  # ``generate`` runs it; the adapter as adapters/best holds it
                base = persona.generate(convs, **self._decoding())
                scores.append(probe(held, persona.stance_losses))
            tuned = persona.generate(convs, **self._decoding())
            scores.append(probe(held, persona.stance_losses))
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
        summary = None
        if held:
            rows.append({"prompt": VAL_STANCE_ROW if val else STANCE_ROW,
                         "kind": "stance_agreement_val" if val else "stance_agreement", "n_statements": len(held),
                         self.PROMPT_ONLY: scores[0].agreement, self.ADAPTER: scores[1].agreement,
                         "mean_margin": {self.PROMPT_ONLY: scores[0].mean_margin,
                                         self.ADAPTER: scores[1].mean_margin}})  # fmt: skip
            n = len(held)
            label = "validation stances" if val else "held-out stances"
            summary = tuple(f"{label}: {x.agreement:.2f} agree ({sum(x.agree):.0f}/{n})" for x in scores)
        table = side_by_side_table(rows[: len(items)], self.PROMPT_ONLY, self.ADAPTER, summary=summary)
        print("\n" + table, file=sys.stdout, flush=True)
        out = Path(trainer.default_root_dir) / "side_by_side.jsonl"
        write_jsonl(out, rows)
        penalty = f", repetition penalty {self.repetition_penalty:g}" if self.repetition_penalty != 1.0 else ""
        print(f"(also in {out}; greedy{penalty}, {shown})", flush=True)

    @staticmethod
    def _best(trainer: L.Trainer) -> tuple[Path | None, int]:
        """``(adapters/best, its step)`` where ``AdapterExport`` wrote it in this fit from weights other than the
        final ones (the adapter ``evaluate`` and ``generate`` are pointed at); ``(None, final step)``: show the final
        weights."""
        final = (None, trainer.global_step)
        export = next((c for c in trainer.callbacks if isinstance(c, AdapterExport)), None)
        if export is None or not export.save_best or export.best_score is None:
            return final
        best = export.root(trainer) / "best"
        step = best_step(best) if (best / METADATA_FILE).is_file() else trainer.global_step
        return final if step == trainer.global_step else (best, step)

    def _decoding(self) -> dict:
        return dict(max_new_tokens=self.max_new_tokens, do_sample=False, repetition_penalty=self.repetition_penalty)

    def _stances(self, dm: PromptData) -> tuple[list[Stance], bool]:
        """``(statements, whether they are the validation band)``: the band's where the data has one, else the
        profile's held-out statements (never trained on); [] when off or without a profile."""
        politician, profiles_dir = dm.style.politician, getattr(dm, "profiles_dir", None)
        if not (self.stances and politician and profiles_dir):
            return [], False
        profile, data_path = load_profile(politician, profiles_dir), getattr(dm, "data_path", None)
        if data_path and _stance_band(data_path):
            return val_stances(profile, politician, data_path), True
        return heldout_stances(profile, politician), False


def _stance_band(data_path: str) -> float:
    """The ``prepare --stance_val_fraction`` a prepared folder was made with (its ``stats.json``; a pairs folder's
    is that of the data its ``pairs.json`` names), 0 without one."""
    pairs = Path(data_path) / "pairs.json"
    if pairs.is_file():
        data_path = json.loads(pairs.read_text(encoding="utf-8")).get("data_path") or data_path
    return float(records.prepared_split(data_path).get("stance_val_fraction") or 0.0)
