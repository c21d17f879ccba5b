"""``model.shared_prefix``: rows that start with the same unscored tokens (a persona's system prompt) run them once,
through the real NF4 + LoRA model, with the loss and every LoRA gradient of the whole rows; and it stays off where it
would not be exact (dropout drawing, left padding, packed rows)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from politician_lm import PoliticianLM
from politician_lm.batch import IGNORE_INDEX
from politician_lm.model.shared_prefix import draws_dropout, shareable, unscored_prefix
from tests.helpers import randomize_lora_b

SYSTEM = "You are a senator from a small state who speaks plainly about roads, farms and schools to the voters."


def _module(tiny_path: str, **kw) -> PoliticianLM:
    model = PoliticianLM(
        model_name_or_path=tiny_path,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=kw.pop("lora_dropout", 0.0),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        **kw,
    )
    model.configure_model()
    randomize_lora_b(model.model)  # an adapter that changes the outputs, so its gradients are not all alike
    model.model.train()
    return model


def _batch(tokenizer, answers: list[str]) -> dict[str, torch.Tensor]:
    """Right-padded rows ``SYSTEM + question`` (unlabelled) then an answer of its own length (labelled)."""
    rows, labels = [], []
    for i, answer in enumerate(answers):
        prompt = tokenizer(f"{SYSTEM}\nQ{i}: what now?\nA:")["input_ids"]
        completion = tokenizer(f" {answer}")["input_ids"]
        rows.append(prompt + completion)
        labels.append([IGNORE_INDEX] * len(prompt) + completion)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in labels]),
    }


ANSWERS = ["We fix the roads first.", "Farms, schools, and the bridge on route nine, every one of them.", "No.", "Yes"]


def _loss_and_grads(module: PoliticianLM, batch: dict, share: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.scorer.share_prefix = share
    module.zero_grad()
    widths = []
    hook = module.scorer.parts[0].register_forward_pre_hook(
        lambda m, a, kw: widths.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        loss = module.scorer.token_loss(batch)
        loss.backward()
    finally:
        hook.remove()
    module.__dict__.setdefault("_widths", []).append(widths)
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.slow  # a model load
def test_the_common_prefix_runs_once_with_the_whole_rows_loss_and_gradients(tiny_path, tokenizer):
    module, batch = _module(tiny_path), _batch(tokenizer, ANSWERS)
    keep = batch["labels"][:, 1:] != IGNORE_INDEX
    shared = unscored_prefix(batch["input_ids"], batch["attention_mask"], keep)
    assert shared >= 20  # the system prompt and more

    whole_loss, whole = _loss_and_grads(module, batch, share=False)
    loss, grads = _loss_and_grads(module, batch, share=True)
    rows, width = batch["input_ids"].shape
    assert module._widths == [[(rows, width)], [(1, shared), (rows, width - shared)]]  # the prefix ran once
    torch.testing.assert_close(loss, whole_loss, rtol=1e-5, atol=1e-6)
    assert whole and grads.keys() == whole.keys()
    for name, grad in whole.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)

    with torch.no_grad():  # validation: eval mode, no gradients
        module.model.eval()
        module.scorer.share_prefix = False
        plain = module.scorer.row_nll(batch)
        module.scorer.share_prefix = True
        torch.testing.assert_close(module.scorer.row_nll(batch), plain, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # a model load
def test_it_stays_off_where_it_would_not_be_exact(tiny_path, tokenizer):
    batch = _batch(tokenizer, ANSWERS)
    plain = _module(tiny_path)
    backbone = plain.scorer.parts[0]
    assert shareable(plain.model, backbone, batch)
    dropping = _module(tiny_path, lora_dropout=0.1)
    assert draws_dropout(dropping.model) and not shareable(dropping.model, dropping.scorer.parts[0], batch)
    dropping.model.eval()
    assert shareable(dropping.model, dropping.scorer.parts[0], batch)  # no draws in eval mode

    left = {k: v.flip(1) for k, v in batch.items()}  # padding at the left of the short rows
    assert not shareable(plain.model, backbone, left)
    packed = {**batch, "position_ids": torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])}
    assert not shareable(plain.model, backbone, packed)
    assert not shareable(plain.model, backbone, {k: v[:1] for k, v in batch.items()})  # one row
