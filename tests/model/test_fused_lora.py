"""model.fused_lora: a LoRA layer adds its update into the base output with one ``addmm``, to float32 rounding of
PEFT's own forward: for one adapter and several, at inference (in place) and in training (the same dropout draws,
the LoRA gradients to float32 rounding), over a float32 and a 4-bit base. With the adapters off, under autocast and
for PEFT's per-row ``adapter_names`` it runs PEFT's forward, bit for bit; unfusing gives PEFT's class back. Real
PEFT and bitsandbytes, no mocks."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from politician_lm.model.fused_lora import fuse_lora_layers, fused_class, unfuse_lora_layers


class Net(torch.nn.Module):
    def __init__(self, nf4: bool = False) -> None:
        super().__init__()
        if nf4:
            import bitsandbytes as bnb

            def linear(i, o, bias=True):
                layer = bnb.nn.Linear4bit(i, o, bias=bias, compute_dtype=torch.float32, quant_type="nf4")
                return layer.to("cpu")  # quantizes the weight

        else:
            linear = torch.nn.Linear
        self.up, self.down = linear(64, 128), linear(128, 64, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def lora_net(dropout: float = 0.0, nf4: bool = False):
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=12, lora_dropout=dropout, target_modules=["up", "down"])
    model = get_peft_model(Net(nf4), cfg)
    model.add_adapter("second", LoraConfig(r=2, lora_alpha=6, lora_dropout=dropout, target_modules=["up", "down"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # PEFT starts B at zero, which would hide any error in the update
    return model


def lora_b_calls(model) -> tuple[list, list]:
    """PEFT's forward calls ``lora_B``; the fused one multiplies by its weight inside ``addmm``."""
    calls: list = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for n, m in model.named_modules() if "lora_B." in n]
    return calls, hooks


@pytest.mark.parametrize("nf4", [False, True], ids=["fp32-base", "nf4-base"])
@pytest.mark.parametrize("active", [["default"], ["default", "second"]], ids=["one", "two"])
def test_inference_adds_the_update_as_peft_does_to_float32_rounding(active, nf4):
    model, x = lora_net(nf4=nf4).eval(), torch.randn(3, 5, 64)
    model.base_model.set_adapter(active)
    classes = [type(m) for m in model.modules()]
    was = {id(m): type(m) for m in model.modules()}
    with torch.no_grad():
        want = model(x)
        layers = fuse_lora_layers(model)
        assert len(layers) == 2 and all(type(m) is fused_class(was[id(m)]) for m in layers)
        calls, hooks = lora_b_calls(model)
        got = model(x)
        assert calls == []
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():
            assert torch.equal(model(x), Net.forward(model.base_model.model, x))
        assert unfuse_lora_layers(model.modules()) == layers and [type(m) for m in model.modules()] == classes
        assert torch.equal(model(x), want) and len(calls) == 2 * len(active)  # PEFT's own forward again
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("nf4", [False, True], ids=["fp32-base", "nf4-base"])
def test_training_draws_the_same_dropout_and_gets_peft_s_gradients(nf4):
    model, x = lora_net(dropout=0.3, nf4=nf4).train(), torch.randn(4, 64)
    model.base_model.set_adapter(["default", "second"])
    trained = [p for p in model.parameters() if p.requires_grad]

    def step():
        model.zero_grad()
        torch.manual_seed(3)
        y = model(x)
        y.square().sum().backward()
        return y.detach(), [p.grad.clone() for p in trained], torch.get_rng_state()

    want = step()
    fuse_lora_layers(model)
    calls, hooks = lora_b_calls(model)
    got = step()
    assert calls == [] and torch.equal(got[2], want[2])  # the fused path ran, and drew what PEFT draws
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert len(got[1]) == 8 and all(g.abs().sum() > 0 for g in got[1])
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    for hook in hooks:
        hook.remove()


def test_autocast_and_a_mixed_batch_run_peft_s_forward():
    model, x = lora_net().eval(), torch.randn(2, 64)
    with torch.no_grad():
        mixed = model(x, adapter_names=["default", "__base__"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x)
        fuse_lora_layers(model)
        calls, _ = lora_b_calls(model)
        assert torch.equal(model(x, adapter_names=["default", "__base__"]), mixed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(x), autocast)
        assert calls


def test_the_switch_keeps_peft_s_forward(monkeypatch):
    from politician_lm.model.fused_lora import SWITCH

    model = lora_net()
    monkeypatch.setenv(SWITCH, "0")
    assert fuse_lora_layers(model) == []
    monkeypatch.setenv(SWITCH, "1")
    assert len(fuse_lora_layers(model)) == 2


def test_dora_runs_peft_s_forward():
    torch.manual_seed(0)
    model = get_peft_model(Net(), LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["up", "down"])).eval()
    x = torch.randn(3, 64)
    with torch.no_grad():
        want = model(x)
        fuse_lora_layers(model)
        calls, _ = lora_b_calls(model)
        assert torch.equal(model(x), want) and calls
