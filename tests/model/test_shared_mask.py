"""``model.shared_mask``: on CPU a training pass converts the boolean attention mask to SDPA's float form once, so
backward keeps one mask for every layer, with bit-identical loss and gradients; other passes are left alone. And
both CPU attention hooks reach training's own pass, which calls the decoder stack, not the model."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from transformers import LlamaForCausalLM

from politician_lm.model.shared_mask import share_cpu_attention_mask
from tests.helpers import saved_for_backward, tiny_llama


def _llama() -> LlamaForCausalLM:
    return tiny_llama(hidden_size=32, num_hidden_layers=3, attn_implementation="sdpa").train()


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padded rows, so the model builds a 4D boolean mask
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _mask_storages(saved: list, rows: int, tokens: int) -> set[int]:
    """Storages of the saved [rows, 1, tokens, tokens] float masks."""
    return {
        t.untyped_storage().data_ptr()
        for t in saved
        if t.is_floating_point() and t.dim() == 4 and tuple(t.shape) == (rows, 1, tokens, tokens)
    }


def _run(model: LlamaForCausalLM, batch: dict) -> tuple[torch.Tensor, dict, list]:
    model.zero_grad()
    loss, saved = saved_for_backward(lambda: model(**batch).loss)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved


def test_one_float_mask_is_kept_for_every_layer_with_bit_identical_loss_and_gradients():
    model, batch = _llama(), _batch()
    plain_loss, plain_grads, plain_saved = _run(model, batch)
    assert len(share_cpu_attention_mask(model, torch.device("cpu"))) == 3  # one on each layer's attention
    loss, grads, saved = _run(model, batch)

    assert len(_mask_storages(plain_saved, 3, 10)) == 3  # SDPA's own conversion, once per layer
    assert len(_mask_storages(saved, 3, 10)) == 1
    masks = next(iter(model.model.layers[0].self_attn._forward_pre_hooks.values())).__self__
    assert len(masks.converted) == 0  # the pass's boolean mask is gone, and nothing here holds its float mask
    assert torch.equal(loss, plain_loss)
    for name, grad in plain_grads.items():
        assert torch.equal(grads[name], grad), name


def test_other_passes_and_devices_are_left_alone():
    model, batch = _llama(), _batch()
    share_cpu_attention_mask(model, torch.device("cpu"))
    seen = []
    for layer in model.model.layers:
        layer.self_attn.register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw["attention_mask"].dtype), with_kwargs=True
        )  # registered after ours: sees what the attention gets
    with torch.no_grad():
        model(**batch)
    model.eval()
    model(**batch)
    assert seen == [torch.bool] * 6
    model.train()
    model(**batch)
    assert seen[6:] == [torch.float32] * 3
    assert share_cpu_attention_mask(_llama(), torch.device("meta")) == []


@pytest.mark.slow  # a model load
def test_training_pass_through_the_backbone_gets_both_cpu_attention_hooks(tmp_path, tiny_path):
    """``Scorer.token_loss`` (what a training step computes) calls the decoder stack and applies the head itself:
    SDPA still gets grouped keys and values (``grouped_attention``) and one float mask."""
    from politician_lm import PoliticianLM
    from politician_lm.model.grouped_attention import transformers_reads_switch

    module = PoliticianLM(model_name_or_path=tiny_path, quantization="nf4", lora_r=4, lora_dropout=0.0,
                          optimizer=partial(torch.optim.AdamW, lr=1e-3))  # fmt: skip
    module.configure_model()
    assert module.scorer.parts is not None  # the split head: the path that went around hooks on the model
    config = module.model.config
    heads, kv_heads, layers = config.num_attention_heads, config.num_key_value_heads, config.num_hidden_layers
    batch = _batch()
    _, saved = saved_for_backward(lambda: module.scorer.token_loss(batch))
    assert len(_mask_storages(saved, 3, 10)) == 1
    head_dim = config.hidden_size // heads
    kv = [t for t in saved if t.dim() == 4 and t.shape[0] == 3 and tuple(t.shape[2:]) == (10, head_dim)]
    if transformers_reads_switch():  # query and output of every head, keys and values of their groups only
        assert sorted(t.shape[1] for t in kv) == sorted([heads] * 2 * layers + [kv_heads] * 2 * layers)


@pytest.mark.slow  # a model load
def test_gradient_checkpointing_trains_on_cpu_without_either_hook(tiny_path):
    """Checkpointing recomputes each layer in backward, outside the forward pass the CPU attention hooks act in:
    recomputed keys and values would then be repeated where the forward's were grouped (a metadata mismatch that
    stops backward), so neither hook is installed there; its backward runs."""
    from politician_lm import PoliticianLM

    module = PoliticianLM(model_name_or_path=tiny_path, quantization="nf4", lora_r=4, gradient_checkpointing=True,
                          optimizer=partial(torch.optim.AdamW, lr=1e-3))  # fmt: skip
    module.configure_model()
    attention = [m for m in module.model.modules() if type(m).__name__.endswith("Attention")]
    assert attention and not any(m._forward_pre_hooks for m in attention)
    loss = module.scorer.token_loss(_batch())
    loss.backward()
    assert torch.isfinite(loss)
