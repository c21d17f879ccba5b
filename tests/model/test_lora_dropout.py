"""A LoRA dropout keeps a boolean mask for backward, not a dropped-out copy and a float mask (``model.lora_dropout``):
the same random draws, loss and LoRA gradients as PEFT's own layer, bit for bit, with fewer bytes kept."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from tests.helpers import first_train_batch, pc_rows, randomize_lora_b


def _module(tiny_path: str, dropout: float, **kw):
    from politician_lm import PoliticianLM

    torch.manual_seed(0)  # the same LoRA A initialisation for every module built here
    module = PoliticianLM(
        model_name_or_path=tiny_path, quantization="nf4", lora_r=4, lora_dropout=dropout,
        optimizer=partial(torch.optim.AdamW, lr=1e-3), **kw,
    )  # fmt: skip
    module.configure_model()
    randomize_lora_b(module.model)
    return module


def _peft_dropout_back(model) -> int:
    """Undo ``lean_lora_dropout``: PEFT's own ``nn.Dropout`` before a plain ``lora_A`` again."""
    from politician_lm.model.lora_dropout import DroppingLinear

    undone = 0
    for layer in model.modules():
        if isinstance(getattr(layer, "lora_A", None), torch.nn.ModuleDict):
            for name, a in layer.lora_A.items():
                if type(a) is DroppingLinear:
                    a.__class__ = torch.nn.Linear
                    layer.lora_dropout[name] = torch.nn.Dropout(a.dropout_p).train(a.training)
                    undone += 1
    return undone


def _step(module, batch, autocast: bool = False) -> tuple[int, torch.Tensor, dict, torch.Tensor]:
    """(bytes the forward pass left allocated, loss, LoRA gradients, RNG state after), from one fixed seed."""
    module.model.zero_grad()
    torch.manual_seed(7)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = module.scorer.token_loss(batch)
    kept = sum(e.self_cpu_memory_usage for e in prof.events())  # allocated and not freed: what backward holds
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}
    return kept, loss.detach(), grads, torch.get_rng_state()


@pytest.mark.slow
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_the_same_draws_loss_and_gradients_as_peft_with_fewer_bytes_kept(tmp_path, tiny_path, autocast):
    from politician_lm.model.lora_dropout import DroppingLinear

    _, batch = first_train_batch(tmp_path, tiny_path, pc_rows(8), batch_size=4)
    module = _module(tiny_path, 0.1)
    lean = [m for m in module.model.modules() if type(m) is DroppingLinear]
    assert lean and all(m.dropout_p == 0.1 for m in lean)
    kept, loss, grads, rng = _step(module, batch, autocast)

    assert _peft_dropout_back(module.model) == len(lean)
    peft_kept, peft_loss, peft_grads, peft_rng = _step(module, batch, autocast)
    plain = _module(tiny_path, 0.0)
    plain.scorer.share_prefix = False  # whole rows, as the dropout runs them (model.shared_prefix)
    no_dropout_kept = _step(plain, batch, autocast)[0]

    assert torch.equal(loss, peft_loss) and torch.equal(rng, peft_rng)  # the same masks drawn, the same loss
    assert grads.keys() == peft_grads.keys() and len(grads) == 2 * len(lean)
    for name in grads:
        assert torch.equal(grads[name], peft_grads[name]), name
    # what the dropout adds to the bytes kept: PEFT keeps a dropped copy and a mask per layer, this a boolean mask
    assert kept - no_dropout_kept < 0.5 * (peft_kept - no_dropout_kept), (kept, peft_kept, no_dropout_kept)


@pytest.mark.slow
def test_only_where_it_applies_and_nothing_changes_outside_training(tmp_path, tiny_path):
    from politician_lm.model.lora_dropout import DroppingLinear, lean_lora_dropout

    _, batch = first_train_batch(tmp_path, tiny_path, pc_rows(8), batch_size=4)
    module = _module(tiny_path, 0.1)
    keys = set(module.model.state_dict())
    assert lean_lora_dropout(module.model) == 0  # already lean: nothing left to change
    module.model.eval()
    with torch.no_grad():
        lean_eval = module.scorer.token_loss(batch)
    _peft_dropout_back(module.model)
    assert set(module.model.state_dict()) == keys  # the same weights under the same names: the same saved adapter
    with torch.no_grad():
        assert torch.equal(lean_eval, module.scorer.token_loss(batch))  # eval mode: no dropout either way

    for kw in ({"gradient_checkpointing": True}, {"use_dora": True}):  # checkpointing's own hooks; DoRA reads x
        built = _module(tiny_path, 0.1, **kw)
        assert not any(type(m) is DroppingLinear for m in built.model.modules()), kw
    assert not any(type(m) is DroppingLinear for m in _module(tiny_path, 0.0).model.modules())


class _NeverExact(dict):
    """Every recomputation judged inexact, as on a device whose kernels round differently."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: object) -> bool:
        return False


@pytest.mark.slow
def test_where_a_recomputation_is_not_exact_the_tensor_is_kept_as_before(tmp_path, tiny_path, monkeypatch):
    from politician_lm.model import lora_dropout

    _, batch = first_train_batch(tmp_path, tiny_path, pc_rows(8), batch_size=4)
    module = _module(tiny_path, 0.1)
    monkeypatch.setattr(lora_dropout, "_EXACT", _NeverExact())
    kept, loss, grads, _ = _step(module, batch)
    _peft_dropout_back(module.model)
    peft_kept, peft_loss, peft_grads, _ = _step(module, batch)
    assert torch.equal(loss, peft_loss) and all(torch.equal(grads[n], peft_grads[n]) for n in grads)
    assert kept >= peft_kept  # nothing replaced: every dropped-out copy and float mask kept, as PEFT keeps them


def test_saves_seen_from_outside_are_a_dropout_free_layers(tiny_path):
    """Under a saved-tensor hook of the caller's (as gradient-free recipes or a memory probe install), a lean LoRA
    dropout passes on exactly what the same model without dropout saves (the layer inputs, the weights): the
    dropped-out copies and float masks never reach it (what it keeps besides is one boolean mask per layer)."""
    import copy

    from peft import LoraConfig, get_peft_model

    from politician_lm.model.lora_dropout import lean_lora_dropout
    from tests.helpers import saved_for_backward, tiny_llama

    base = tiny_llama(hidden_size=64, intermediate_size=128)
    ids = torch.randint(0, base.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))

    def saved_bytes(dropout: float, lean: bool) -> int:
        torch.manual_seed(3)
        model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_dropout=dropout, target_modules="all-linear"))
        if lean:
            assert lean_lora_dropout(model) == 14  # 2 layers x 7 adapted linears
        model.train()
        _, saved = saved_for_backward(lambda: model(input_ids=ids, labels=ids).loss)
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())

    none, peft = saved_bytes(0.0, False), saved_bytes(0.1, False)
    assert saved_bytes(0.1, True) == none < peft


@pytest.mark.slow  # a subprocess
def test_the_device_check_script_passes_on_cpu():
    """``scripts/check_lora_dropout.py`` is what a lent GPU runs (scripts/device_checks.sh); here it runs on the CPU."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    proc = subprocess.run(
        [sys.executable, "scripts/check_lora_dropout.py", "--device", "cpu", "--tokens", "64"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.count("bit-identical") == 2 and "14 adapters lean" in proc.stdout
