"""Generation shares the prompts' common prefix (the persona's system prompt and template): it must give exactly the
answers that running every prompt whole gives."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from politician_lm.model.decoding import generate_new_text, move_padding_after_prefix, shared_prefix_length
from tests.helpers import randomize_lora_b

SYSTEM = "SYSTEM: You are Joe Biden, the 46th president. Answer as yourself, plainly, in the first person.\n"
QUESTIONS = ["USER: Jobs?", "USER: What will you do about the cost of insulin for seniors?", "USER: Hi", "USER: Why?"]


def left_padded(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([[5, 6, 7, 8], [5, 6, 7, 9, 1, 2], [5, 6, 7, 8, 3]], 3),  # real tokens compared, not padded columns
        ([[5, 6, 7], [5, 6, 7]], 2),  # identical prompts: the last token stays for generate to run
        ([[5, 6, 7], [4, 6, 7]], 0),
        ([[5], [5, 6, 7]], 0),
        ([[5, 6, 7, 8, 9], [5, 6]], 1),
    ],
)
def test_shared_prefix_length(rows, expected):
    assert shared_prefix_length(*left_padded(rows)) == expected


def test_padding_moves_between_the_prefix_and_the_rest_of_each_prompt():
    ids, mask = left_padded([[5, 6, 7, 8], [5, 6, 7, 9, 1, 2], [5, 6, 1]], pad=0)
    new_ids, new_mask = move_padding_after_prefix(ids, mask, 2)
    assert new_ids.tolist() == [[5, 6, 0, 0, 7, 8], [5, 6, 7, 9, 1, 2], [5, 6, 0, 0, 0, 1]]
    assert new_mask.tolist() == [[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 1]]
    assert torch.equal(ids, left_padded([[5, 6, 7, 8], [5, 6, 7, 9, 1, 2], [5, 6, 1]])[0])  # inputs untouched


def tiny_tokenizer(tiny_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = tok.pad_token or tok.eos_token  # as load_persona sets it
    return tok


def batch_of(tokenizer, prompts):
    return tokenizer.pad(
        {"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]},
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )


def with_and_without_sharing(model, tok, batch, max_new_tokens: int) -> list[list[str]]:
    """Greedy answers for the batch, first with the shared prefix, then with every prompt run whole."""
    return [
        generate_new_text(
            model,
            tok,
            batch["input_ids"],
            batch["attention_mask"],
            share_prefix=share,
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
        for share in (True, False)
    ]


@pytest.mark.parametrize("with_adapter", [False, True])
def test_sharing_the_prefix_gives_the_same_answers_as_whole_prompts(tiny_path, with_adapter):
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    if with_adapter:  # a PEFT model with a non-zero LoRA update, as evaluate and serve hold it
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear")).eval()
        randomize_lora_b(model, std=0.2)
    batch = batch_of(tok, [SYSTEM + q + "\nPOLITICIAN:" for q in QUESTIONS])
    assert shared_prefix_length(batch["input_ids"], batch["attention_mask"]) >= 8
    runs = with_and_without_sharing(model, tok, batch, max_new_tokens=24)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1 and all(runs[0])  # real, different answers, not a row of empty strings


def test_prompts_without_a_common_prefix_generate_as_before(tiny_path):
    tok = tiny_tokenizer(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    batch = batch_of(tok, ["USER: Jobs?\nPOLITICIAN:", "What about the border?"])
    assert shared_prefix_length(batch["input_ids"], batch["attention_mask"]) < 8
    runs = with_and_without_sharing(model, tok, batch, max_new_tokens=12)
    assert runs[0] == runs[1] and all(runs[0])


@pytest.mark.slow
def test_smollm2_persona_answers_are_unchanged_by_sharing_the_system_prompt(smollm2_path):
    from politician_lm.data.templates import PromptStyle
    from politician_lm.inference import Persona

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path).eval()
    style = PromptStyle(prompt_format="chat", system_prompt=SYSTEM.removeprefix("SYSTEM: ").strip(), politician="biden")
    persona = Persona(model=model, tokenizer=tok, style=style)
    convs = [[{"role": "user", "content": q.removeprefix("USER: ")}] for q in QUESTIONS]
    ids = [persona.prompt_ids(c) for c in convs]
    batch = tok.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt")
    assert shared_prefix_length(batch["input_ids"], batch["attention_mask"]) > 20
    runs = with_and_without_sharing(model, tok, batch, max_new_tokens=32)
    assert runs[0] == runs[1] and all(runs[0])
