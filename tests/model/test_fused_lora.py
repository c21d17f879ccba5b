"""model.fused_lora: at inference on CPU an unmerged LoRA layer adds its update into the base output with one
``addmm_``, to float32 rounding of PEFT's own forward, for one adapter, several weighted ones, and with the adapters
off; calls that need a gradient, train mode and PEFT's per-row ``adapter_names`` run PEFT's forward bit for bit;
unfusing gives PEFT's class back. Real PEFT, no mocks."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear

from politician_lm.model.fused_lora import fuse_lora_layers, fused_class, unfuse_lora_layers


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(48, 96), torch.nn.Linear(96, 48, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def lora_net(dropout: float = 0.0):
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["up", "down"])
    model = get_peft_model(Net(), cfg)
    model.add_adapter("second", LoraConfig(r=2, lora_alpha=6, target_modules=["up", "down"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # PEFT starts B at zero, which would hide any error in the update
    return model.eval()


def outputs(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("active", [["default"], ["default", "second"]])
def test_the_fused_update_is_peft_s_to_float32_rounding(active):
    model, x = lora_net(), torch.randn(3, 5, 48)
    model.base_model.set_adapter(active)
    want = outputs(model, x)
    layers = fuse_lora_layers(model)
    assert len(layers) == 2 and all(type(m) is fused_class() and isinstance(m, LoraLinear) for m in layers)
    calls = []  # PEFT's forward calls lora_B; the fused one multiplies by its weight inside addmm_
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for n, m in model.named_modules() if "lora_B." in n]
    got = outputs(model, x)
    assert calls == []
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with model.disable_adapter():
        torch.testing.assert_close(outputs(model, x), Net.forward(model.base_model.model, x), rtol=0, atol=0)
    unfuse_lora_layers(layers)
    assert all(type(m) is LoraLinear for m in layers) and torch.equal(outputs(model, x), want)
    assert len(calls) == 2 * len(active)  # PEFT's own forward again
    for hook in hooks:
        hook.remove()


def test_a_call_with_gradients_or_in_train_mode_runs_peft_s_forward():
    model, x = lora_net(dropout=0.5), torch.randn(2, 48)
    torch.manual_seed(3)
    want = model.train()(x)
    fuse_lora_layers(model)
    torch.manual_seed(3)
    got = model(x)  # train mode with a gradient: PEFT's forward, its dropout draws included
    assert torch.equal(got, want) and got.requires_grad
    got.sum().backward()
    assert model.base_model.model.up.lora_A["default"].weight.grad is not None
    model.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        fused = model(x)
    torch.testing.assert_close(fused, outputs(model.train(False), x), rtol=0, atol=0)


def test_a_mixed_batch_runs_peft_s_forward():
    model, x = lora_net(), torch.randn(2, 48)
    with torch.no_grad():
        want = model(x, adapter_names=["default", "__base__"])
    fuse_lora_layers(model)
    with torch.no_grad():
        assert torch.equal(model(x, adapter_names=["default", "__base__"]), want)
