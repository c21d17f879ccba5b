"""The gated MLP's fused activation (``model.swiglu``): bit-identical values and gradients, and one [tokens,
intermediate] tensor fewer kept for backward per MLP (two with the product recomputed)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from transformers import LlamaForCausalLM

from politician_lm.model.swiglu import fuse_gated_mlps, silu_mul
from tests.helpers import first_train_batch, pc_rows, randomize_lora_b, saved_for_backward, tiny_llama

INTERMEDIATE = 48


def _llama(act: str = "silu") -> LlamaForCausalLM:
    return tiny_llama(intermediate_size=INTERMEDIATE, hidden_act=act)


def _unfuse(model: torch.nn.Module) -> None:
    for module in model.modules():
        module.__dict__.pop("forward", None)  # the class's own forward again


def _loss_grads_saved(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict, list]:
    model.zero_grad()
    loss, saved = saved_for_backward(lambda: model(input_ids=ids, labels=ids).loss)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, [tuple(t.shape) for t in saved]


@pytest.mark.parametrize("recompute_product, fewer", [(False, 1), (True, 2)])
def test_values_and_gradients_are_bit_identical_and_wide_tensors_fewer_are_kept(recompute_product, fewer):
    model = _llama()
    ids = torch.randint(0, 64, (3, 11))
    plain_loss, plain_grads, plain_saved = _loss_grads_saved(model, ids)
    assert fuse_gated_mlps(model, recompute_product=recompute_product) == 2
    loss, grads, saved = _loss_grads_saved(model, ids)

    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and len(grads) > 10
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name
    wide = [s for s in saved if s and s[-1] == INTERMEDIATE]
    plain_wide = [s for s in plain_saved if s and s[-1] == INTERMEDIATE]
    # silu(gate(x)) is no longer kept, and with recompute_product neither is the product down_proj reads
    assert len(plain_wide) - len(wide) == 2 * fewer
    with torch.no_grad():  # no gradient wanted: the plain ops, the same logits as the class's own forward
        fused_logits = model(input_ids=ids).logits
        _unfuse(model)
        assert torch.equal(fused_logits, model(input_ids=ids).logits)


def test_the_product_is_recomputed_once_per_mlp_and_not_without_a_gradient(monkeypatch):
    from politician_lm.model import recompute

    made = []
    real = recompute.Recipe.__init__
    monkeypatch.setattr(recompute.Recipe, "__init__", lambda self, *a: made.append(a[1].shape) or real(self, *a))
    model = _llama()
    fuse_gated_mlps(model, recompute_product=True)
    ids = torch.randint(0, 64, (2, 7))
    model(input_ids=ids, labels=ids).loss.backward()
    assert made == [(14, INTERMEDIATE)] * 2  # down_proj's flattened input, once per MLP; nothing else
    made.clear()
    with torch.no_grad():
        model(input_ids=ids)
    assert made == []


def test_each_input_gets_its_own_gradient_alone():
    torch.manual_seed(0)
    gate, up = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(silu_mul, (gate.clone().requires_grad_(), up.clone().requires_grad_()))
    g = gate.clone().requires_grad_()
    silu_mul(g, up).sum().backward()  # up takes no gradient: gate's alone
    g_ref = gate.clone().requires_grad_()
    (torch.nn.functional.silu(g_ref) * up).sum().backward()
    assert torch.equal(g.grad, g_ref.grad)


def test_a_fused_model_survives_pickle_and_deepcopy_with_the_same_logits():
    import copy
    import pickle

    model = _llama()
    fuse_gated_mlps(model)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            mlp = twin.model.layers[0].mlp
            assert mlp.forward.args[0] is mlp  # the copy's own MLP, not the original's
            assert torch.equal(twin(input_ids=ids).logits, logits)


def test_an_mlp_without_silu_is_left_alone():
    model = _llama(act="gelu")
    assert fuse_gated_mlps(model) == 0
    assert all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("packing", [False, True])
def test_the_trainable_model_keeps_recipes_with_the_same_loss_and_lora_gradients(tmp_path, tiny_path, packing):
    from politician_lm import PoliticianLM

    _, batch = first_train_batch(tmp_path, tiny_path, pc_rows(12), batch_size=4, packing=packing)
    model = PoliticianLM(
        model_name_or_path=tiny_path, quantization="nf4", lora_r=4, lora_dropout=0.0,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )  # fmt: skip
    model.configure_model()
    randomize_lora_b(model.model)
    fused = [m for m in model.model.modules() if "forward" in m.__dict__ and hasattr(m, "gate_proj")]
    assert len(fused) == model.model.config.num_hidden_layers
    assert all(m.forward.keywords == {"recompute_product": True} for m in fused)  # no gradient checkpointing here
    norm_hooks = [
        h
        for m in model.model.modules()
        for h in (m._forward_hooks, m._forward_pre_hooks)
        if type(m).__name__.endswith(("RMSNorm", "Attention", "MLP"))
    ]
    layers = model.model.config.num_hidden_layers  # the norms' recipes, and each attention's shared float mask
    assert sum(len(h) for h in norm_hooks) == 3 * 2 * layers + layers
    results = []
    for kind in ("fused", "plain"):
        if kind == "plain":
            _unfuse(model.model)
            for hooks in norm_hooks:
                hooks.clear()  # the norms' outputs kept as they are again
        model.zero_grad()
        loss = model.scorer.token_loss(batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (loss, grads), (plain_loss, plain_grads) = results
    assert torch.equal(loss, plain_loss)
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name
