"""LoRA layers read their input as it comes under autocast (``model.lora_inputs``): bit-identical loss and LoRA
gradients, fewer tensors kept for backward, and PEFT's cast kept where there is no autocast."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.helpers import first_train_batch, pc_rows, randomize_lora_b, saved_for_backward


def _kept_bytes_loss_grads(model, batch) -> tuple[int, torch.Tensor, dict]:
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, saved = saved_for_backward(lambda: model.scorer.token_loss(batch))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}  # each counted once
    return sum(storages.values()), loss.detach(), grads


@pytest.mark.slow
def test_under_autocast_the_same_numbers_with_fewer_bytes_kept_and_without_it_peft_still_casts(tmp_path, tiny_path):
    from politician_lm import PoliticianLM
    from politician_lm.model.lora_inputs import _cast_only_without_autocast, share_lora_inputs

    _, batch = first_train_batch(tmp_path, tiny_path, pc_rows(8), batch_size=4)
    module = PoliticianLM(
        model_name_or_path=tiny_path, quantization="nf4", compute_dtype="bfloat16", lora_r=4, lora_dropout=0.0,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )  # fmt: skip
    module.configure_model()  # builds the model with the hooks (build_trainable_model)
    randomize_lora_b(module.model)
    kept, loss, grads = _kept_bytes_loss_grads(module, batch)

    assert share_lora_inputs(module.model)  # it finds the LoRA layers; now only our hooks off, PEFT's own cast back:
    removed = 0
    for layer in module.model.modules():
        for key, hook in list(layer._forward_pre_hooks.items()):
            if hook is _cast_only_without_autocast:  # any other hook (PEFT's, torch's) stays in the comparison
                del layer._forward_pre_hooks[key]
                removed += 1
        if hasattr(layer, "cast_input_dtype_enabled"):
            layer.cast_input_dtype_enabled = True  # PEFT's default, which the hook had set for the last pass
    assert removed and not any(
        h is _cast_only_without_autocast for m in module.model.modules() for h in m._forward_pre_hooks.values()
    )
    plain_kept, plain_loss, plain_grads = _kept_bytes_loss_grads(module, batch)

    assert loss.dtype == torch.float32 and torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and grads
    for name in grads:
        assert grads[name].dtype == torch.float32  # the LoRA weights stay fp32
        assert torch.equal(grads[name], plain_grads[name]), name
    assert kept < plain_kept  # no bf16 copy of each LoRA layer's input

    share_lora_inputs(module.model)
    with torch.no_grad():  # no autocast: a bf16 input and fp32 LoRA weights need PEFT's cast, which stays on
        out = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert torch.isfinite(out.logits.float()).all()
