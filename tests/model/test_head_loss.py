"""The output head's NLL a chunk of positions at a time (``model.head_loss``): the same values and gradients as
cross-entropy after the head, and no [tokens, vocab] tensor kept for backward."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from politician_lm.model import head_loss
from politician_lm.model.head_loss import fusable, head_nll
from tests.helpers import first_train_batch, pc_rows, randomize_lora_b, saved_for_backward


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows_per_chunk", [3, 1000])
def test_values_and_gradients_equal_cross_entropy_after_the_head_in_float64(monkeypatch, bias, rows_per_chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=bias).double().requires_grad_(False)
    monkeypatch.setattr(head_loss, "CHUNK", 50 * rows_per_chunk)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    upstream = torch.rand(37, dtype=torch.float64)  # a different weight per position: the rows are scaled per position

    fused = head_nll(hidden, head, targets)
    (grad,) = torch.autograd.grad((fused * upstream).sum(), hidden)
    plain = F.cross_entropy(head(hidden), targets, reduction="none")
    (plain_grad,) = torch.autograd.grad((plain * upstream).sum(), hidden)

    assert fused.dtype == torch.float64
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda h: head_nll(h, head, targets), (hidden[:5].detach().requires_grad_(),))
    with torch.no_grad():  # no gradient wanted: the values alone
        torch.testing.assert_close(head_nll(hidden, head, targets), plain.detach(), rtol=1e-12, atol=0)


def test_float32_values_follow_the_plain_path_and_a_trainable_head_is_not_fused():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 40).requires_grad_(False)
    hidden, targets = torch.randn(10, 8), torch.randint(0, 40, (10,))
    assert head_nll(hidden, head, targets).dtype == torch.float32
    plain = F.cross_entropy(head(hidden), targets, reduction="none")
    torch.testing.assert_close(head_nll(hidden, head, targets), plain)
    assert fusable(head)
    assert not fusable(head.requires_grad_(True))  # its own gradient is not computed here: the plain path keeps it
    assert not fusable(torch.nn.Embedding(40, 8))


@pytest.mark.parametrize("packing", [False, True])
def test_training_keeps_no_vocab_wide_tensor_and_the_same_loss_and_lora_gradients(
    tmp_path, tiny_path, monkeypatch, packing
):
    from politician_lm import PoliticianLM

    _, batch = first_train_batch(tmp_path, tiny_path, pc_rows(12), batch_size=4, packing=packing)
    model = PoliticianLM(
        model_name_or_path=tiny_path,
        quantization="none",
        lora_r=4,
        lora_dropout=0.0,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    model.configure_model()
    model.model.double()
    randomize_lora_b(model.model)
    vocab = model.model.get_output_embeddings().weight.shape[0]
    results = {}
    for kind in ("chunked", "plain"):
        if kind == "plain":
            monkeypatch.setattr(head_loss, "fusable", lambda head: False)
        model.zero_grad()
        loss, saved = saved_for_backward(lambda: model.scorer.token_loss(batch))
        shapes = [tuple(t.shape) for t in saved]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results[kind] = (loss.detach(), grads, [s for s in shapes if s and s[-1] == vocab])
    (loss, grads, wide), (plain_loss, plain_grads, plain_wide) = results["chunked"], results["plain"]
    assert wide == [] and plain_wide  # the plain path keeps [tokens, vocab] logits for backward; chunked keeps none
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, plain_loss, rtol=1e-12, atol=0)
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-9, atol=1e-13, msg=name)


def test_a_head_of_another_linear_type_scores_a_chunk_of_positions_at_a_time_without_gradients(monkeypatch):
    """Inference's head is packed (a ``Linear`` subclass, not fusable): scoring thousands of positions must not
    build their [positions, vocab] logits at once, and the chunks give the values of the one-piece pass."""

    class Packed(torch.nn.Linear):  # stands for model.packed_linear.PackedLinear: another type of linear layer
        pass

    torch.manual_seed(0)
    head = Packed(16, 50).double().requires_grad_(False)
    hidden, targets = torch.randn(37, 16, dtype=torch.float64), torch.randint(0, 50, (37,))
    monkeypatch.setattr(head_loss, "CHUNK", 50 * 4)
    rows: list[int] = []
    head.register_forward_hook(lambda m, args, out: rows.append(len(out)))
    plain = F.cross_entropy(head(hidden), targets, reduction="none")
    rows.clear()
    assert not fusable(head)
    with torch.no_grad():
        chunked = head_loss.token_nll(hidden, head, targets)
    assert rows == [4] * 9 + [1]  # 37 positions, 4 a chunk
    torch.testing.assert_close(chunked, plain.detach(), rtol=1e-12, atol=0)
    rows.clear()
    with torch.enable_grad():  # a gradient wanted: the plain path, in one piece
        head_loss.token_nll(hidden.requires_grad_(), head, targets)
    assert rows == [37]
