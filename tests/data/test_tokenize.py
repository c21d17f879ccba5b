"""Completion-only masking, BOS/EOS handling and the over-long policy, checked against an independent reference."""

import pytest

from politician_lm.batch import IGNORE_INDEX
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import encode

CASES = [
    ("USER: What's your position on climate change?\n", "POLITICIAN: Here's the deal, it is an existential threat."),
    ("USER: Tell me about your economic policy\n", "POLITICIAN: Look, we grow it from the bottom up and middle out."),
    ("USER: Continue the speech: My fellow Americans,\n", "POLITICIAN: we are going to win so much, believe me."),
    ("Q:", " A short one."),
    ("", "POLITICIAN: An answer with no prompt at all."),
]


@pytest.mark.parametrize("prompt,completion", CASES)
def test_masking_matches_reference_token_by_token(tokenizer, prompt, completion):
    out = encode(tokenizer, prompt, completion, max_length=512)
    ref_prompt = tokenizer(prompt).input_ids  # the prompt alone, BOS included
    ref_full = tokenizer(prompt + completion).input_ids + [tokenizer.eos_token_id]
    assert out["input_ids"] == ref_full
    assert out["labels"] == [IGNORE_INDEX] * len(ref_prompt) + ref_full[len(ref_prompt) :]
    assert out["input_ids"].count(tokenizer.bos_token_id) == 1 and out["input_ids"][0] == tokenizer.bos_token_id
    assert out["input_ids"][-1] == tokenizer.eos_token_id and out["labels"][-1] == tokenizer.eos_token_id
    assert out["status"] == "ok"


def test_chat_template_has_one_bos_and_one_eos(tokenizer):
    style = PromptStyle(prompt_format="chat", system_prompt="You are Joe Biden.")
    messages = [
        {"role": "user", "content": "USER: Who are you?"},
        {"role": "assistant", "content": "POLITICIAN: I'm Joe Biden."},
    ]
    prompt, completion = style.render(messages, tokenizer)
    assert prompt.startswith(tokenizer.bos_token) and "You are Joe Biden." in prompt
    assert "USER:" not in prompt and "POLITICIAN:" not in completion  # role labels stripped in chat mode
    out = encode(tokenizer, prompt, completion, max_length=512)
    ids = out["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids.count(tokenizer.eos_token_id) == 1
    # reference: the rendered prompt already holds BOS, so tokenize without adding special tokens
    ref_prompt = tokenizer(prompt, add_special_tokens=False).input_ids
    ref_full = tokenizer(prompt + completion, add_special_tokens=False).input_ids
    assert ids == ref_full
    assert out["labels"] == [IGNORE_INDEX] * len(ref_prompt) + ref_full[len(ref_prompt) :]
    assert (
        tokenizer.decode([t for t in out["labels"] if t != IGNORE_INDEX], skip_special_tokens=True).strip()
        == "I'm Joe Biden."
    )


def test_plain_format_joins_turns_with_separator():
    style = PromptStyle(prompt_format="plain", separator="\n")
    msgs = [
        {"role": "user", "content": "USER: hi"},
        {"role": "assistant", "content": "POLITICIAN: hello"},
        {"role": "user", "content": "USER: and?"},
        {"role": "assistant", "content": "POLITICIAN: folks"},
    ]
    assert style.render(msgs) == ("USER: hi\nPOLITICIAN: hello\nUSER: and?\n", "POLITICIAN: folks")


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_overlong_policy(tokenizer, policy):
    prompt, completion = "USER: Speak at length\n", "POLITICIAN: " + "folks, here is the deal. " * 40
    full = encode(tokenizer, prompt, completion, max_length=4096)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    out = encode(tokenizer, prompt, completion, max_length=n_prompt + 5, overlong=policy)
    if policy == "drop":
        assert out["status"] == "dropped" and out["input_ids"] == []
    else:
        assert out["status"] == "truncated"
        assert out["input_ids"] == full["input_ids"][: n_prompt + 5]
        assert out["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert out["input_ids"][-1] != tokenizer.eos_token_id  # a cut completion is not taught to stop


def test_prompt_longer_than_max_length_is_dropped_even_when_truncating(tokenizer):
    out = encode(tokenizer, "USER: " + "word " * 50, "POLITICIAN: ok", max_length=8, overlong="truncate")
    assert out["status"] == "dropped"
