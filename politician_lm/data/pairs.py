"""Preference pairs as training data: a pair tokenized as chosen and rejected answer after one prompt, and laid out
as one row (the prompt once, then both answers) for the DPO objective; the layout is the contract in
``politician_lm.batch``.
"""

from __future__ import annotations

from typing import Any

import torch

from politician_lm.batch import IGNORE_INDEX, SEGMENT_CHOSEN, SEGMENT_PAD, SEGMENT_PROMPT, SEGMENT_REJECTED
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import Overlong, encode


def tokenize_pair(
    row: dict, tokenizer: Any, style: PromptStyle, max_length: int, overlong: Overlong, add_bos: bool
) -> dict:
    """Chosen and rejected answer after the same prompt, each with its own completion-only labels."""
    prompt, chosen = style.render(row["messages"], tokenizer)
    other_prompt, rejected = style.render(
        [*row["messages"][:-1], {"role": "assistant", "content": row["rejected"]}], tokenizer
    )
    if other_prompt != prompt:
        raise ValueError(f"the prompt renders differently before the two answers: {prompt!r} vs {other_prompt!r}")
    c = encode(tokenizer, prompt, chosen, max_length, overlong, add_bos)
    r = encode(tokenizer, prompt, rejected, max_length, overlong, add_bos)
    statuses = {c["status"], r["status"]}
    status = "dropped" if "dropped" in statuses else "truncated" if "truncated" in statuses else "ok"
    return {
        "input_ids": c["input_ids"],
        "labels": c["labels"],
        "rejected_input_ids": r["input_ids"],
        "rejected_labels": r["labels"],
        "status": status,
    }


# the columns the collator reads
PAIR_COLUMNS = ["input_ids", "labels", "rejected_input_ids", "rejected_labels", "index"]


class PairCollator:
    """A batch of N preference pairs as N rows, each the pair's prompt once, then its chosen answer, then its rejected
    answer (the layout ``politician_lm.batch`` describes), right-padded; plus ``index``, each pair's row in its
    dataset (the key of its cached reference log-probabilities).

    The prompt is scored once for both answers: on the demo's pairs (102-token prompts, 50 + 88-token answers) that
    is 0.64 of the tokens of two padded rows per pair.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.pad_id = tokenizer.pad_token_id  # the DataModule sets it (to EOS where the tokenizer has none)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [pair_row(f["input_ids"], f["labels"], f["rejected_input_ids"], f["rejected_labels"]) for f in features]
        width = max(len(r["input_ids"]) for r in rows)
        fill = {
            "input_ids": self.pad_id,
            "position_ids": 0,
            "segments": SEGMENT_PAD,
            "chosen_targets": IGNORE_INDEX,
            "rejected_targets": IGNORE_INDEX,
        }
        batch = {
            key: torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows]) for key, value in fill.items()
        }
        batch["index"] = torch.tensor([int(f["index"]) for f in features])
        batch["real_tokens"] = torch.tensor(sum(len(r["input_ids"]) for r in rows))
        batch["sequences"] = torch.tensor(len(rows))  # examples: pairs
        return batch


def pair_row(chosen: list[int], chosen_labels: list[int], rejected: list[int], rejected_labels: list[int]) -> dict:
    """One pair as one row: the shared prompt, the chosen answer's tokens, then the rejected answer's tokens.

    The shared part is the longest common prefix of the two sequences inside both prompts (both answers follow the
    same prompt tokens; the prefix rule keeps it exact should a tokenizer merge across the prompt's end). Targets sit
    at the position whose logits predict them, so the last shared position predicts the first token of each answer.
    """
    shared = 0
    limit = min(len(chosen), len(rejected))
    while (
        shared < limit
        and chosen[shared] == rejected[shared]
        and chosen_labels[shared] == IGNORE_INDEX
        and rejected_labels[shared] == IGNORE_INDEX
    ):
        shared += 1
    tail = len(rejected) - shared
    ids = chosen + rejected[shared:]
    chosen_targets = chosen_labels[1:] + [IGNORE_INDEX] * (tail + 1)
    rejected_targets = [IGNORE_INDEX] * len(ids)
    for j in range(max(shared, 1), len(rejected)):  # rejected[j] is predicted by the position holding rejected[j-1]
        source = j - 1 if j - 1 < shared else len(chosen) + (j - 1 - shared)
        rejected_targets[source] = rejected_labels[j]
    return {
        "input_ids": ids,
        "position_ids": list(range(len(chosen))) + list(range(shared, len(rejected))),
        "segments": [SEGMENT_PROMPT] * shared + [SEGMENT_CHOSEN] * (len(chosen) - shared) + [SEGMENT_REJECTED] * tail,
        "chosen_targets": chosen_targets,
        "rejected_targets": rejected_targets,
    }
