"""``model.recompute``: a decoder layer's norm outputs are kept as recipes while the module they feed runs, with
bit-identical loss and gradients, and nothing changes without a gradient or for a tensor that is not theirs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import LlamaForCausalLM

from politician_lm.model import recompute
from politician_lm.model.recompute import recompute_norm_outputs, recompute_saves
from politician_lm.model.swiglu import fuse_gated_mlps
from tests.helpers import tiny_llama

HIDDEN = 16


def _llama() -> LlamaForCausalLM:
    model = tiny_llama(hidden_size=HIDDEN)
    for p in model.model.embed_tokens.parameters():
        p.requires_grad_(False)  # as under LoRA: the first norm's input needs no gradient
    return model


def _loss_and_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_norm_outputs_are_recomputed_with_bit_identical_loss_and_gradients(monkeypatch):
    made = []
    real = recompute.Recipe.__init__
    monkeypatch.setattr(recompute.Recipe, "__init__", lambda self, *a: made.append(tuple(a[1].shape)) or real(self, *a))
    model, ids = _llama(), torch.randint(0, 64, (3, 9))
    plain_loss, plain_grads = _loss_and_grads(model, ids)
    assert len(recompute_norm_outputs(model)) == 3 * 4 and fuse_gated_mlps(model, recompute_product=True) == 2
    loss, grads = _loss_and_grads(model, ids)

    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and len(grads) > 10
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name
    # per layer: the attention input read by q, k and v; the MLP input by gate and up; the product by down
    normed, product = (27, HIDDEN), (27, 48)
    assert sorted(made) == sorted([normed] * 3 * 2 + [normed] * 2 * 2 + [product] * 2)
    made.clear()
    with torch.no_grad():
        model(input_ids=ids)
    assert made == []


def test_a_tensor_that_is_not_the_target_is_saved_as_it_is():
    a = torch.randn(4, 3, requires_grad=True)
    target, other = torch.randn(4, 3), torch.randn(4, 3)
    with recompute_saves(target, lambda: target * 0):  # a recipe that would give wrong values if it were used
        y = (a * other).sum()
    y.backward()
    assert torch.equal(a.grad, other)


def test_a_failing_pass_leaves_no_hook_behind():
    model = _llama()
    recompute_norm_outputs(model)
    model(input_ids=torch.randint(0, 64, (1, 4)), labels=torch.randint(0, 64, (1, 4)))
    down = model.model.layers[0].mlp.down_proj
    down.register_forward_hook(lambda *a: 1 / 0)  # fails inside the MLP, after our enter and before its end
    with pytest.raises(ZeroDivisionError):
        model(input_ids=torch.randint(0, 64, (1, 4)), labels=torch.randint(0, 64, (1, 4)))
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None  # no saved-tensor hook left active


def test_other_saves_go_on_to_the_hooks_active_outside():
    """Autograd runs only the innermost saved-tensor hooks: every tensor a recipe does not stand for is packed and
    unpacked by the caller's hooks, and the target never reaches them."""
    packed, unpacked = [], []

    def pack(t):
        packed.append(t)
        return ("mine", t)

    def unpack(saved):
        unpacked.append(saved[1])
        return saved[1]

    a = torch.randn(4, 3, requires_grad=True)
    target, other = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        with recompute_saves(target, lambda: target.detach() * 1):
            y = (a * other).sum() + (target * target).sum()
    y.backward()
    assert torch.equal(a.grad, other) and torch.equal(target.grad, 2 * target.detach())
    assert any(t is other for t in packed) and any(t is other for t in unpacked)
    assert not any(t.untyped_storage().data_ptr() == target.untyped_storage().data_ptr() for t in packed)


def _saved_shapes(model: LlamaForCausalLM, ids: torch.Tensor) -> tuple[torch.Tensor, Counter]:
    from tests.helpers import saved_for_backward

    loss, saved = saved_for_backward(lambda: model(input_ids=ids, labels=ids).loss)
    return loss.detach(), Counter(tuple(t.shape) for t in saved)


def test_a_caller_hook_sees_every_save_of_the_model_but_the_recipes():
    """A memory probe or activation offloading (``save_on_cpu``) around a model with recipes sees what the model
    without them saves, less exactly the norm outputs and MLP products kept as recipes (none of them hidden inside
    an attention or MLP block)."""
    model, ids = _llama(), torch.randint(0, 64, (3, 9))
    assert fuse_gated_mlps(model) == 2
    plain_loss, plain = _saved_shapes(model, ids)
    recompute_norm_outputs(model)
    fuse_gated_mlps(model, recompute_product=True)
    loss, with_recipes = _saved_shapes(model, ids)
    assert torch.equal(loss, plain_loss)
    normed, product = (27, HIDDEN), (27, 48)  # as in the first test: 3 + 2 normed inputs a layer, one product
    assert plain - with_recipes == Counter({normed: 10, product: 2}) and not with_recipes - plain

    plain_grads = _loss_and_grads(model, ids)[1]
    with torch.autograd.graph.save_on_cpu():  # every other save copied out and back: the same gradients
        offloaded = _loss_and_grads(model, ids)[1]
    assert all(torch.equal(offloaded[n], plain_grads[n]) for n in plain_grads)
