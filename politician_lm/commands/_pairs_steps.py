"""``pairs``'s steps: the records on their way to pairs, the partial file that makes a run resumable, the base
model's rejected answers, and the pair record each item becomes (or why it is dropped)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from politician_lm.artifacts.jsonl import jsonl_line, read_jsonl
from politician_lm.artifacts.roles import strip_role_label
from politician_lm.artifacts.stances import heldout_stance_problem, own_side
from politician_lm.data import records
from politician_lm.data.templates import PromptStyle
from politician_lm.errors import UserError

__all__ = [
    "PairItem",
    "generate_rejected",
    "load_partial",
    "other_answers",
    "pair_record",
    "partial_path",
    "read_items",
]

GENERATED = ("base", "prompt-only")  # the sources the base model writes
_LABEL = re.compile(r"^\s*([A-Z][A-Z ]{0,30}:)\s*")
_WORDS = re.compile(r"\w+(?:['’]\w+)*")


def similarity(a: str, b: str) -> float:
    """Similarity of two answers' lowercased word sequences (difflib ratio: 1.0 identical, 0.0 nothing shared)."""
    return SequenceMatcher(None, _WORDS.findall(a.lower()), _WORDS.findall(b.lower()), autojunk=False).ratio()


def question(context: list[dict[str, str]]) -> str:
    """The prompt turns, speaker labels dropped, lowercased, spaces collapsed: the key that matches questions."""
    return " | ".join(
        " ".join(strip_role_label(m["content"]).lower().split()) for m in context if m["role"] != "system"
    )


@dataclass
class PairItem:
    """One prepared record on its way to a pair: where it came from, its conversation, and its rejected answer's
    ``source`` (``base``, ``prompt-only``, ``other:FILE:LINE`` or ``none``) with ``key``, its id in the partial
    file."""

    file: Path
    line: int
    record: dict[str, Any]
    messages: list[dict[str, str]]
    source: str = "none"
    key: str = ""
    rejected: str | None = None  # another politician's answer (``other``) or the record's ``opposite`` answer
    chosen: str | None = None  # ``side``: the politician's side sentence alone, against the opposite one

    @property
    def context(self) -> list[dict[str, str]]:
        return self.messages[:-1]

    def choose_source(self, sources: list[str], others: dict[str, tuple[str, str, str | None]]) -> None:
        """The first of ``sources`` that has an answer for this prompt (``other`` only where another politician
        answered the same question, and on a stance record only where that answer takes the other side;
        ``opposite`` only where the record carries the answer from the opposite position, as ``prepare --stances``
        writes it), and the item's key in the partial file."""
        opposite, other = self.record.get("opposite"), others.get(question(self.context))
        position = self.record.get("position")
        has = {
            "other": other is not None and (position is None or other[2] != position),
            "opposite": isinstance(opposite, str) and bool(opposite),
        }
        has["side"] = has["opposite"]
        source = next((s for s in sources if s in GENERATED or has.get(s, False)), "none")
        self.source = source
        if source == "other":
            self.rejected, self.source, _ = others[question(self.context)]
        elif source == "opposite":
            self.rejected = opposite
        elif source == "side":  # a minimal pair: the two sides' sentences, nothing else differs
            self.rejected, self.chosen = opposite, own_side(opposite, str(position))
        self.key = hashlib.sha256(json.dumps([source, self.messages]).encode()).hexdigest()


def read_items(files: list[Path], kinds: list[str] | None) -> list[PairItem]:
    """The records of ``files`` (only ``kinds``, when given) as conversations."""
    items = []
    for path in files:
        for lineno, obj in read_jsonl(path):
            if problem := heldout_stance_problem(obj):
                raise UserError(f"{path}:{lineno}: {problem}")
            conv = records.to_conversation(obj)
            if kinds and conv["kind"] not in kinds:
                continue
            items.append(PairItem(path, lineno, obj, conv["messages"]))
    return items


def other_answers(paths: list[str]) -> dict[str, tuple[str, str, str | None]]:
    """``{question: (answer, "other:FILE:LINE", position)}`` over every record of the other politicians' data
    (``position``: a stance record's side, else None)."""
    answers: dict[str, tuple[str, str, str | None]] = {}
    for p in paths:
        files = records.discover(p)
        records.validate(files)
        for item in read_items([*files.train, *files.val], None):
            found = (item.messages[-1]["content"], f"other:{item.file}:{item.line}", item.record.get("position"))
            answers.setdefault(question(item.context), found)
    return answers


def partial_path(out: Path) -> Path:
    """Where finished batches are kept until the output folder is written: beside it, hidden."""
    return out.with_name(f".{out.name}.partial.jsonl")


def load_partial(path: Path, settings_digest: str) -> dict[str, str]:
    """Rejected answers generated by an earlier run with the same settings (a torn last line is ignored)."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except ValueError:
        header = {}
    if header.get("settings") != settings_digest:
        print(f"{path}: left by a run with other settings; starting over", file=sys.stderr)
        path.unlink()
        return {}
    done = {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except ValueError:
            break  # a write cut short by a kill: everything before it is complete
        done[row["key"]] = row["text"]
    return done


def generate_rejected(
    todo: list[PairItem],
    styles: dict[str, PromptStyle],
    base_model: str,
    quantization: str,
    batch_size: int,
    partial: Path,
    settings_digest: str,
    done: dict[str, str],
    generation_settings: dict[str, Any],
    seed: int,
) -> None:
    """Generate the missing rejected answers batch by batch, appending each batch to the partial file."""
    import torch
    from tqdm import tqdm

    from politician_lm.inference import load_persona

    persona = load_persona(base_model=base_model, quantization=quantization)
    if not partial.is_file():
        partial.write_text(json.dumps({"settings": settings_digest}) + "\n", encoding="utf-8")
    with (
        tqdm(total=len(todo), desc="Generating rejected answers", unit="prompt", file=sys.stderr) as bar,
        open(partial, "a", encoding="utf-8") as fh,
    ):
        for source, style in styles.items():
            mine = [i for i in todo if i.source == source]
            for start in range(0, len(mine), batch_size):
                chunk = mine[start : start + batch_size]
                # seeded per batch by its first key, so a resumed run draws what the first run would have drawn
                torch.manual_seed(int(hashlib.sha256(f"{seed}:{chunk[0].key}".encode()).hexdigest()[:8], 16))
                texts = replace(persona, style=style).generate([i.context for i in chunk], **generation_settings)
                for item, text in zip(chunk, texts):
                    done[item.key] = text
                    fh.write(jsonl_line({"key": item.key, "text": text}))
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(len(chunk))


def pair_record(item: PairItem, text: str, max_similarity: float, base_model: str | None) -> dict | str:
    """The output record, or why it is dropped (``similar``, ``empty``)."""
    chosen = item.messages[-1]["content"]
    answer = strip_role_label(text).strip()
    label = _LABEL.match(chosen)
    if item.chosen is not None:
        chosen = f"{label.group(1)} {item.chosen}" if label else item.chosen
    if label:
        answer = f"{label.group(1)} {answer}"  # the pair differs in what is said, not in the speaker label
    if not strip_role_label(answer).strip():
        return "empty"
    score = similarity(strip_role_label(chosen), strip_role_label(answer))
    if score >= max_similarity and item.source != "side":  # a side pair is near-identical by design
        return "similar"
    record = item.record
    meta = {k: v for k, v in record.items() if k not in ("prompt", "completion", "messages")}
    provenance = {"rejected_source": item.source, "similarity": round(score, 3)}
    if item.source in GENERATED:
        provenance["rejected_model"] = base_model
    if "messages" in record:
        return {
            "prompt": item.context,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": answer}],
            **meta,
            **provenance,
        }
    return {"prompt": record["prompt"], "chosen": chosen, "rejected": answer, **meta, **provenance}
