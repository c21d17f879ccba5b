"""``model.grouped_attention``: on CPU, a training pass gives SDPA grouped keys and values (no repeated copies kept
for backward), with the same loss and gradients to fp32 rounding; other passes and other devices are left alone; and
where the installed transformers does not read the switch (before 5.23), nothing is installed."""

from __future__ import annotations

import os

import pytest
import torch
import transformers
from transformers import LlamaForCausalLM

from politician_lm.model.grouped_attention import FORCE_GQA, group_cpu_attention, transformers_reads_switch
from tests.helpers import saved_for_backward, tiny_llama

HEAD_DIM = 8
needs_switch = pytest.mark.skipif(
    not transformers_reads_switch(),
    reason=f"transformers {transformers.__version__} does not read {FORCE_GQA} (5.23 and later do)",
)


def _llama(kv_heads: int = 1) -> LlamaForCausalLM:
    model = tiny_llama(hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=kv_heads,
                       attn_implementation="sdpa")  # fmt: skip
    return model.train()


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # a padded row, so the model builds an attention mask
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _run(model: LlamaForCausalLM, batch: dict) -> tuple[torch.Tensor, dict, list]:
    model.zero_grad()
    loss, saved = saved_for_backward(lambda: model(**batch).loss)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved


def _kv_shapes(saved: list, batch: dict) -> list[tuple]:
    """Saved tensors shaped like SDPA's keys and values: [rows, heads, tokens, head_dim]."""
    rows, tokens = batch["input_ids"].shape
    return [tuple(t.shape) for t in saved if t.dim() == 4 and t.shape[0] == rows and t.shape[2:] == (tokens, HEAD_DIM)]


@needs_switch
def test_a_training_pass_keeps_grouped_keys_and_values_with_the_same_loss_and_gradients(monkeypatch):
    monkeypatch.delenv(FORCE_GQA, raising=False)
    model, batch = _llama(), _batch()
    plain_loss, plain_grads, plain_saved = _run(model, batch)
    assert len(group_cpu_attention(model, torch.device("cpu"))) == 2
    loss, grads, saved = _run(model, batch)

    heads = [s[1] for s in _kv_shapes(saved, batch)]
    plain_heads = [s[1] for s in _kv_shapes(plain_saved, batch)]
    # per layer: SDPA's query, output and the repeated keys and values, all of 4 heads ...
    assert plain_heads.count(4) == 4 * 2 and 1 not in plain_heads
    # ... and now the query and output of 4 heads, keys and values of their 1 group: no repeated copies
    assert heads.count(4) == 2 * 2 and heads.count(1) == 2 * 2
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6)
    assert FORCE_GQA not in os.environ  # put back as it was


@needs_switch
@pytest.mark.parametrize("previous", [None, "0"])
def test_the_switch_is_on_only_inside_a_training_pass_and_restored_even_on_error(monkeypatch, previous):
    if previous is None:
        monkeypatch.delenv(FORCE_GQA, raising=False)
    else:
        monkeypatch.setenv(FORCE_GQA, previous)
    model, batch = _llama(), _batch()
    group_cpu_attention(model, torch.device("cpu"))
    seen = []
    model.model.layers[0].self_attn.register_forward_pre_hook(lambda m, a: seen.append(os.environ.get(FORCE_GQA)))
    model(**batch)
    model.eval()
    model(**batch)
    model.train()
    with torch.no_grad():
        model(**batch)
    assert seen == ["1", previous, previous]
    with pytest.raises(IndexError):
        model(input_ids=torch.tensor([[99]]))  # out of the vocabulary: the pass fails inside the model
    assert os.environ.get(FORCE_GQA) == previous


def test_the_check_says_what_the_installed_transformers_does_and_the_switch_is_installed_only_where_it_is_read(
    monkeypatch,
):
    model, batch = _llama(), _batch()
    monkeypatch.setenv(FORCE_GQA, "1")
    heads = [s[1] for s in _kv_shapes(_run(model, batch)[2], batch)]
    assert (1 in heads) == transformers_reads_switch()  # grouped keys and values reached SDPA, or repeated ones
    monkeypatch.delenv(FORCE_GQA)
    assert len(group_cpu_attention(model, torch.device("cpu"))) == (2 if transformers_reads_switch() else 0)


def test_nothing_is_installed_off_cpu_or_without_grouped_heads():
    assert group_cpu_attention(_llama(), torch.device("cuda")) == []
    assert group_cpu_attention(_llama(kv_heads=4), torch.device("cpu")) == []
    eager = _llama()
    eager.config._attn_implementation = "eager"
    assert group_cpu_attention(eager, torch.device("cpu")) == []
