"""The in-place growing key/value cache: the same keys and values as transformers' ``DynamicLayer``, without
copying the cache at every step, and the same greedy answers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.cache_utils import DynamicLayer

from politician_lm.model.decoding import generate_new_text
from politician_lm.model.kv_cache import SPARE, GrowingLayer, growing
from tests.model.test_decoding import QUESTIONS, SYSTEM, batch_of, tiny_tokenizer


def states(rows: int, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, tokens, 4, generator=g), torch.randn(rows, 2, tokens, 4, generator=g)


def test_updates_give_the_same_keys_and_values_as_a_dynamic_layer_through_crops_and_row_changes():
    plain, grown = DynamicLayer(), GrowingLayer()
    steps = [states(3, 5, 0), states(3, 1, 1), states(3, 1, 2)]
    for k, v in steps:
        for layer in (plain, grown):
            layer.update(k, v)
        assert torch.equal(plain.keys, grown.keys) and torch.equal(plain.values, grown.values)
    for layer in (plain, grown):  # a row leaves, the rest are repeated (beam search), the last token is taken back
        layer.batch_select_indices(torch.tensor([0, 2]))
        layer.batch_repeat_interleave(2)
        layer.crop(-1)
    moved = []
    for seed in range(3, 7):
        k, v = states(4, SPARE + 1 if seed == 5 else 1, seed)  # seed 5 overflows the spare room: a new buffer
        before = grown.keys.data_ptr()
        for layer in (plain, grown):
            layer.update(k, v)
        moved.append(grown.keys.data_ptr() != before)
        assert torch.equal(plain.keys, grown.keys) and torch.equal(plain.values, grown.values)
    assert moved == [True, False, True, False]  # re-allocated after the rows changed, and when full; else in place
    assert grown.keys.shape == (4, 2, 6 + 3 + SPARE + 1, 4)


def test_a_decoding_step_writes_into_the_buffer_instead_of_copying_the_cache():
    cache = growing(DynamicCache(ddp_cache_data=[states(2, 6, 0)]))
    layer = cache.layers[0]
    assert isinstance(layer, GrowingLayer)
    layer.update(*states(2, 1, 1))  # the first append moves the cache into a buffer with room
    where = layer.keys.data_ptr(), layer.values.data_ptr()
    for seed in range(2, 12):
        keys, values = layer.update(*states(2, 1, seed))
        assert (keys.data_ptr(), values.data_ptr()) == where  # DynamicLayer's cat gives a new tensor every step
    assert keys.shape[-2] == 6 + 11


@pytest.mark.slow
def test_generation_with_the_growing_cache_answers_as_transformers_own_cache(tiny_path):
    from peft import LoraConfig, get_peft_model

    from tests.helpers import randomize_lora_b

    tok = tiny_tokenizer(tiny_path)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_path), LoraConfig(r=4, target_modules="all-linear")
    )
    randomize_lora_b(model.eval(), std=0.2)
    for prompts in ([SYSTEM + q + "\nPOLITICIAN:" for q in QUESTIONS], ["USER: Jobs?\nPOLITICIAN:", "What about it?"]):
        batch = batch_of(tok, prompts)
        ours = generate_new_text(
            model, tok, batch["input_ids"], batch["attention_mask"], max_new_tokens=40, do_sample=False
        )
        out = model.generate(**batch, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        theirs = tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        assert ours == theirs and all(ours)
