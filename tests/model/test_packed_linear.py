"""model.packed_linear: frozen float32 CPU layers multiply through oneDNN with their weight packed once, to float32
rounding of ``nn.Linear``; a call that needs a gradient, a narrow layer and a trainable one stay ``nn.Linear``'s; a
changed or replaced weight is packed again; the context puts the layers back. Real oneDNN, no mocks."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from politician_lm.model.packed_linear import MIN_FEATURES, PackedLinear, pack_linears, packed, unpack_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")


def frozen(i: int, o: int, bias: bool = True) -> torch.nn.Linear:
    layer = torch.nn.Linear(i, o, bias=bias)
    layer.requires_grad_(False)
    return layer


def test_a_packed_layer_computes_the_linear_map_through_onednn():
    torch.manual_seed(0)
    layer, x = frozen(96, 160), torch.randn(3, 7, 96)
    want = torch.nn.functional.linear(x.double(), layer.weight.double(), layer.bias.double())
    (changed,) = pack_linears(torch.nn.Sequential(layer))
    assert changed is layer and type(layer) is PackedLinear and layer._packed is None  # packed at first use
    got = layer(x)
    assert layer._packed is not None and layer._packed.is_mkldnn
    assert got.dtype == torch.float32 and got.shape == (3, 7, 160)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(layer(x[:1]), got[:1])  # a row's result does not depend on the rows beside it


def test_calls_that_need_a_gradient_run_nn_linear_and_get_one():
    torch.manual_seed(1)
    layer = frozen(64, 64)
    pack_linears(torch.nn.Sequential(layer))
    x = torch.randn(4, 64, requires_grad=True)
    y = layer(x)
    assert torch.equal(y, torch.nn.functional.linear(x, layer.weight, layer.bias)) and layer._packed is None
    y.sum().backward()
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(4, 64))


def test_narrow_trainable_and_non_float32_layers_are_left_alone():
    model = torch.nn.ModuleDict(
        {
            "narrow": frozen(MIN_FEATURES, MIN_FEATURES - 1),  # a LoRA-sized matrix
            "trainable": torch.nn.Linear(128, 128),
            "bf16": frozen(128, 128).to(torch.bfloat16),
            "wide": frozen(128, 128, bias=False),
        }
    )
    assert pack_linears(model) == [model["wide"]]
    assert [type(m) for m in model.values()] == [torch.nn.Linear] * 3 + [PackedLinear]


def test_a_weight_changed_in_place_or_replaced_is_packed_again():
    torch.manual_seed(2)
    layer, x = frozen(64, 96), torch.randn(5, 64)
    pack_linears(torch.nn.Sequential(layer))
    layer(x)
    with torch.no_grad():
        layer.weight.add_(1.0)  # a merge writes into the base weight
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    layer.weight = torch.nn.Parameter(torch.randn(96, 64), requires_grad=False)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_copies_pickles_and_the_context_put_layers_back():
    torch.manual_seed(3)
    model, x = torch.nn.Sequential(frozen(64, 64), torch.nn.ReLU(), frozen(64, 80)), torch.randn(2, 64)
    with packed(model):
        assert [type(m) for m in model] == [PackedLinear, torch.nn.ReLU, PackedLinear]
        got = model(x)
        twin = copy.deepcopy(model)
        restored = pickle.loads(pickle.dumps(model))
        assert twin[0]._packed is None and torch.equal(twin(x), got) and torch.equal(restored(x), got)
    assert [type(m) for m in model] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert not hasattr(model[0], "_packed") or model[0].__dict__.get("_packed") is None
    unpack_linears([model[0]])  # not packed: nothing happens
    assert type(model[0]) is torch.nn.Linear


def test_the_switch_turns_packing_off_and_inference_mode_weights_pack(monkeypatch):
    monkeypatch.setenv("POLITICIAN_LM_PACKED_LINEAR", "0")
    assert pack_linears(torch.nn.Sequential(frozen(64, 64))) == []
    monkeypatch.delenv("POLITICIAN_LM_PACKED_LINEAR")
    with torch.inference_mode():  # a model loaded under inference mode: its weights have no version counter
        layer, x = frozen(64, 64), torch.randn(2, 64)
    pack_linears(torch.nn.Sequential(layer))
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
