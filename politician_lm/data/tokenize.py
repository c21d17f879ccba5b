"""Turn (prompt, completion) text into ``input_ids`` and ``labels`` with the prompt masked to -100.

The full text is tokenized once, so token boundaries are exactly those of ``tokenizer(prompt + completion)``;
a token is a prompt token when it starts inside the prompt text (from the fast tokenizer's offsets).
BOS is prepended only when the tokenizer adds one by default and the text does not already start with it
(chat templates often write ``<s>`` themselves), so there is never a double BOS. EOS is appended so the model
learns to stop.

Over-long examples follow ``overlong``: ``truncate`` cuts the completion to fit (no EOS is added to a cut
completion, so the model is not taught to stop mid-thought); ``drop`` removes the example. An example whose
prompt alone leaves no room for a completion token is always dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from politician_lm.batch import IGNORE_INDEX

Overlong = Literal["truncate", "drop"]


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text)`` prepends BOS by default (Llama/Mistral style)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def encode_prompt(tokenizer: Any, prompt: str, add_bos: bool | None = None) -> list[int]:
    """Token ids of a prompt exactly as ``encode`` lays them out in training (same BOS rule), for generation."""
    if add_bos is None:
        add_bos = adds_bos(tokenizer)
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if add_bos and (not ids or ids[0] != tokenizer.bos_token_id):
        ids.insert(0, tokenizer.bos_token_id)
    return ids


def encode(
    tokenizer: Any,
    prompt: str,
    completion: str,
    max_length: int,
    overlong: Overlong = "truncate",
    add_bos: bool | None = None,
) -> dict[str, Any]:
    """Return ``{"input_ids", "labels", "status"}``; status is ``ok``, ``truncated`` or ``dropped``."""
    if add_bos is None:
        add_bos = adds_bos(tokenizer)
    enc = tokenizer(prompt + completion, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    n_prompt = sum(1 for start, _ in enc["offset_mapping"] if start < len(prompt))
    if add_bos and (not ids or ids[0] != tokenizer.bos_token_id):
        ids.insert(0, tokenizer.bos_token_id)
        n_prompt += 1
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    status = "ok"
    if len(ids) > max_length:
        if overlong == "drop" or n_prompt >= max_length:
            return {"input_ids": [], "labels": [], "status": "dropped"}
        ids, status = ids[:max_length], "truncated"
    labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
    return {"input_ids": ids, "labels": labels, "status": status}
