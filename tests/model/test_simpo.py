"""SimPO (``model.objective: simpo``): the reference-free preference loss, checked in float64 against a closed form
and an independent computation, its one-line option errors, and a short fit that learns without a reference."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from politician_lm.errors import UserError
from tests.helpers import randomize_lora_b
from tests.model.test_preference import CHAT_PAIR, pair_datamodule, pair_rows


def test_simpo_loss_gradient_in_the_log_probabilities_is_the_closed_form():
    from politician_lm.model.preference import simpo_loss

    torch.manual_seed(0)
    chosen, rejected = ((torch.randn(5, dtype=torch.float64) * 10 - 50).requires_grad_() for _ in range(2))
    n_w, n_l = torch.tensor([7, 9, 3, 12, 5]), torch.tensor([8, 4, 6, 12, 10])
    beta, gamma, w = 2.0, 0.5, 0.3
    out = simpo_loss(chosen, rejected, n_w, n_l, beta, gamma, w)
    d_chosen, d_rejected = torch.autograd.grad(out.loss, (chosen, rejected))
    h = (beta * chosen / n_w - beta * rejected / n_l - gamma).detach()
    weight = torch.sigmoid(-h) / 5  # d(-log sigmoid(h))/dh = -sigmoid(-h), averaged over 5 pairs
    assert torch.allclose(d_chosen, -weight * beta / n_w - w / 36.0, rtol=1e-12, atol=0)
    assert torch.allclose(d_rejected, weight * beta / n_l, rtol=1e-12, atol=0)
    want = float(torch.nn.functional.softplus(-h).mean() - w * chosen.detach().sum() / 36)
    assert out.loss.item() == pytest.approx(want, rel=1e-12)
    assert torch.equal(out.chosen_rewards, (beta * chosen / n_w).detach())
    assert out.metrics()["reward_accuracy"].item() == float((out.chosen_rewards > out.rejected_rewards).float().mean())


def test_simpo_has_no_reference_a_lean_shared_by_every_pair_moves_it():
    """The reason it exists here: DPO measures rewards from the reference, so a policy equal to its reference has
    loss log 2 on every pair whatever it prefers; SimPO's loss is larger on the pairs the policy gets wrong."""
    from politician_lm.model.preference import dpo_loss, simpo_loss

    chosen = torch.tensor([-10.0, -20.0], dtype=torch.float64)  # pair 0 right, pair 1 wrong
    rejected = torch.tensor([-20.0, -10.0], dtype=torch.float64)
    tokens = torch.tensor([10, 10])
    dpo = dpo_loss(chosen, rejected, chosen, rejected, tokens, beta=0.5)
    assert dpo.dpo_loss.item() == pytest.approx(math.log(2))
    simpo = simpo_loss(chosen, rejected, tokens, tokens, beta=2.0, gamma=0.0)
    per_pair = torch.nn.functional.softplus(-(2.0 * chosen / 10 - 2.0 * rejected / 10))
    assert simpo.dpo_loss.item() == pytest.approx(float(per_pair.mean())) and per_pair[1] > per_pair[0]


def simpo_module(tiny_path, **kw):
    from politician_lm import PoliticianLM

    return PoliticianLM(
        model_name_or_path=tiny_path,
        lora_r=4,
        lora_dropout=0.0,
        **{"quantization": "none", "objective": "simpo", "beta": 2.0, "gamma": 0.5, "sft_weight": 0.7, **kw},
    )


def test_simpo_loss_and_gradients_match_an_independent_float64_computation(tmp_path, tiny_path):
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(3) + [{**CHAT_PAIR, "kind": "identity"}], batch_size=4)
    module = simpo_module(tiny_path)
    module.configure_model()
    module.model.double()
    randomize_lora_b(module.model, std=0.1)
    batch = next(iter(dm.reference_dataloaders()["train"]))
    params = [p for p in module.parameters() if p.requires_grad]
    out = module._preference(batch, "train")  # no reference was ever computed or set
    assert out.loss.dtype == torch.float64
    grads = torch.autograd.grad(out.loss, params)

    sums, counts = [], []  # every answer in its own forward pass, token by token from the full logits
    dataset = dm.train_dataset
    for side in ("", "rejected_"):
        for i in range(len(dataset)):
            ids, labels = dataset[i][f"{side}input_ids"], dataset[i][f"{side}labels"]
            logprobs = torch.log_softmax(module.model(input_ids=torch.tensor([ids])).logits.double()[0], dim=-1)
            picked = [logprobs[t - 1, labels[t]] for t in range(1, len(ids)) if labels[t] != -100]
            sums.append(torch.stack(picked).sum())
            counts.append(len(picked))
    n = len(dataset)
    losses = [
        torch.nn.functional.softplus(-(2.0 * sums[i] / counts[i] - 2.0 * sums[n + i] / counts[n + i] - 0.5))
        for i in range(n)
    ]
    expected = sum(losses) / n + 0.7 * (-sum(sums[:n]) / sum(counts[:n]))
    expected_grads = torch.autograd.grad(expected, params)
    assert abs(out.loss.item() - expected.item()) < 1e-8 * max(1.0, abs(expected.item()))
    for g, e in zip(grads, expected_grads):  # float32 rounding inside RMSNorm: see the DPO test
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-7 * float(e.abs().max()))
    assert any(g.abs().max() > 1e-6 for g in grads)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"objective": "orpo"}, "unknown model.objective 'orpo'; use 'sft', 'dpo', 'simpo'"),
        ({"gamma": float("nan")}, "model.gamma must be a finite number"),
        ({"beta": 0.0}, "model.beta must be > 0"),
    ],
)
def test_bad_objective_options_fail_in_one_line_before_any_load(tiny_path, kw, message):
    with pytest.raises(UserError, match=message):
        simpo_module(tiny_path, **kw)


@pytest.mark.slow
def test_simpo_fit_learns_the_pairs_without_a_reference(tmp_path, tiny_path):
    import lightning.pytorch as L

    from tests.model.test_preference import dpo_trainer

    L.seed_everything(0)
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(12), batch_size=4)
    module = simpo_module(tiny_path, quantization="nf4", sft_weight=0.1, optimizer=partial(torch.optim.AdamW, lr=2e-2))
    seen = {}

    class Probe(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            seen.setdefault("first", {k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = dpo_trainer(tmp_path / "run", 6)
    trainer.callbacks.append(Probe())
    trainer.fit(module, datamodule=dm)
    start, end = seen["first"], {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert end["val_dpo_loss"] < start["val_dpo_loss"] and end["val_reward_margin"] > start["val_reward_margin"]
    assert end["val_reward_accuracy"] == 1.0
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.ckpt", weights_only=False)
    assert "politician_lm_dpo_reference" not in ckpt  # nothing to carry: no reference
    assert (tmp_path / "run" / "adapters" / "last" / "adapter_model.safetensors").is_file()

    # its checkpoint resumes only as SimPO, and SimPO resumes no other objective's checkpoint: one line each
    from politician_lm import PoliticianLM

    sft = PoliticianLM(model_name_or_path=tiny_path)
    with pytest.raises(UserError, match="from a SimPO run; resume it with --model.objective simpo"):
        sft.objective.load(ckpt)
    simpo_module(tiny_path).objective.load(ckpt)  # its own: accepted
    with pytest.raises(UserError, match="not from a SimPO run"):
        simpo_module(tiny_path).objective.load({k: v for k, v in ckpt.items() if k != "politician_lm_simpo"})
    with pytest.raises(UserError, match="from a DPO run"):
        simpo_module(tiny_path).objective.load({**ckpt, "politician_lm_dpo_reference": {"logps": {}}})
