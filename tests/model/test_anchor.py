"""Anchor records in a preference stage (``data.anchor_path``, ``model.anchor_weight``): every training batch of
pairs comes with SFT records whose completion NLL is added to the loss, read from the anchor's training split only,
and resumed where the run stopped."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from politician_lm.errors import UserError
from tests.helpers import pc_rows, randomize_lora_b, write_jsonl
from tests.model.test_preference import pair_datamodule, pair_rows
from tests.model.test_simpo import simpo_module


def anchor_folder(tmp_path, n_train=10, n_val=3):
    rows = pc_rows(n_train + n_val)
    write_jsonl(tmp_path / "speech" / "train.jsonl", rows[:n_train])
    write_jsonl(
        tmp_path / "speech" / "val.jsonl", [{**r, "completion": r["completion"] + " VAL"} for r in rows[n_train:]]
    )
    return str(tmp_path / "speech")


def batches(loader, epoch):
    """Every batch of one epoch of a (combined) train loader, as Lightning's fit loop would set its epoch."""
    for dl in loader.flattened:
        dl.sampler.set_epoch(epoch)
    return [b for b, _, _ in loader] if hasattr(loader, "flattened") else list(loader)


def test_the_loss_is_the_pairs_loss_plus_the_weighted_anchor_nll(tmp_path, tiny_path):
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(6), batch_size=2, anchor_path=anchor_folder(tmp_path))
    assert len(dm.anchor_dataset) == 10  # train.jsonl only: the anchor's val records are never read
    epoch = batches(dm.train_dataloader(), 0)
    assert len(epoch) == 3  # as many batches as there are pair batches (the anchor has 5)
    batch = epoch[0]
    assert set(batch) == {"pairs", "anchor"} and batch["anchor"]["input_ids"].shape[0] == 2

    module = simpo_module(tiny_path, anchor_weight=0.3)
    module.configure_model()
    module.model.double()
    randomize_lora_b(module.model, std=0.1)
    step = module.objective.step
    with_anchor = step(module.scorer, batch, "train", module.device)
    pairs_only = step(module.scorer, batch["pairs"], "train", module.device)
    nll = module.scorer.token_loss(batch["anchor"])
    assert torch.allclose(with_anchor.loss, pairs_only.loss + 0.3 * nll, rtol=1e-12)
    assert float(with_anchor.metrics["anchor_nll"]) == pytest.approx(float(nll), rel=1e-12)
    assert with_anchor.size == pairs_only.size == 2  # counted in pairs
    assert "anchor_nll" not in pairs_only.metrics  # validation batches are pairs alone


def test_a_resumed_fit_continues_the_anchor_where_it_stopped(tmp_path, tiny_path):
    anchor = anchor_folder(tmp_path, n_train=7)
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(9), batch_size=2, anchor_path=anchor)
    whole = batches(dm.train_dataloader(), 1)  # 5 pair batches; the anchor's 4 cycle
    assert len(whole) == 5 and torch.equal(whole[4]["anchor"]["input_ids"], whole[0]["anchor"]["input_ids"])
    for done in (2, 4):
        again = pair_datamodule(tmp_path, tiny_path, pair_rows(9), batch_size=2, anchor_path=anchor)
        again.load_state_dict({"epoch": 1, "batches_done": done})
        rest = [b for b, _, _ in again.train_dataloader()]  # Lightning sets the same epoch again: no change
        assert len(rest) == 5 - done
        for got, want in zip(rest, whole[done:]):
            for part in ("pairs", "anchor"):
                assert torch.equal(got[part]["input_ids"], want[part]["input_ids"])


@pytest.mark.parametrize(
    ("anchor_pairs", "sft_data", "message"),
    [
        (True, False, "data.anchor_path holds preference pairs; give it SFT records"),
        (False, True, "holds SFT records, and data.anchor_path only anchors a preference stage"),
    ],
)
def test_a_wrong_anchor_fails_in_one_line_before_tokenizing(tmp_path, tiny_path, anchor_pairs, sft_data, message):
    from politician_lm import PoliticianDataModule

    anchor = write_jsonl(tmp_path / "a.jsonl", pair_rows(3) if anchor_pairs else pc_rows(3))
    data = write_jsonl(tmp_path / "d.jsonl", pc_rows(6) if sft_data else pair_rows(6))
    with pytest.raises(UserError, match=message):
        PoliticianDataModule(data_path=str(data), tokenizer=tiny_path, anchor_path=str(anchor))


def test_a_bad_anchor_weight_fails_in_one_line(tiny_path):
    with pytest.raises(UserError, match="model.anchor_weight must be a finite number >= 0, got -1.0"):
        simpo_module(tiny_path, anchor_weight=-1.0)


@pytest.mark.slow
def test_an_anchored_simpo_fit_trains_on_both(tmp_path, tiny_path):
    import lightning.pytorch as L

    from politician_lm.callbacks.throughput import QLoRAThroughput
    from tests.model.test_preference import dpo_trainer

    L.seed_everything(0)
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(8), batch_size=4, anchor_path=anchor_folder(tmp_path))
    module = simpo_module(tiny_path, quantization="nf4", optimizer=partial(torch.optim.AdamW, lr=2e-2))
    nll = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            nll.append(float(trainer.callback_metrics["train_anchor_nll"]))

    trainer = dpo_trainer(tmp_path / "run", 6)
    throughput = QLoRAThroughput(every_n_steps=2)
    trainer.callbacks += [Probe(), throughput]
    trainer.fit(module, datamodule=dm)
    assert len(nll) == 6 and nll[-1] < nll[0]  # the anchor records are learned alongside the pairs
    assert "val_anchor_nll" not in trainer.callback_metrics
    assert throughput._sequences == 6 * (4 + 4)  # throughput counts both: 4 pair rows and 4 anchor rows a step
