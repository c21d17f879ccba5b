"""Anchor records in a preference stage (``data.anchor_path``, ``model.anchor_weight``): every training batch of
pairs comes with SFT records from the anchor's training split, whose completion NLL may not rise above the stage's
start without a cost; the starting NLL and the anchor's place are kept across a resume."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from politician_lm.errors import UserError
from politician_lm.model.anchor import TOP_K, bucket_kl, top_buckets
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


def test_the_loss_is_the_pairs_loss_plus_the_weighted_rise_of_the_anchor_nll(tmp_path, tiny_path):
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

    def own_nll(i):  # one anchor record alone, token by token from the full logits, float64
        row = dm.anchor_dataset[i]
        logprobs = torch.log_softmax(module.model(input_ids=torch.tensor([row["input_ids"]])).logits[0], dim=-1)
        picked = [-logprobs[t - 1, row["labels"][t]] for t in range(1, len(row["labels"])) if row["labels"][t] != -100]
        return torch.stack(picked).mean()

    module.objective.prepare(dm, module.scorer, module.device)  # the starting weights' NLL of every record
    start = module.objective.anchor.reference
    assert start.dtype == torch.float64 and len(start) == 10
    assert torch.allclose(start, torch.stack([own_nll(i) for i in range(10)]).detach(), rtol=1e-10)
    step = module.objective.step
    at_start = step(module.scorer, batch, "train", module.device)
    assert float(at_start.metrics["anchor_rise"]) < 1e-10  # nothing to pay before the weights move

    randomize_lora_b(module.model, std=0.1, seed=1)  # the weights move: odd records now 0.5 above their start,
    now = torch.stack([own_nll(i) for i in range(10)]).detach()  # even ones 0.5 below (whatever the LoRA-A init)
    module.objective.anchor.reference = now + torch.tensor([0.5, -0.5] * 5, dtype=torch.float64)
    rises = []
    for batch in epoch:
        with_anchor = step(module.scorer, batch, "train", module.device)
        pairs_only = step(module.scorer, batch["pairs"], "train", module.device)
        each = [
            (own_nll(i) - module.objective.anchor.reference[i]).clamp(min=0) for i in batch["anchor"]["index"].tolist()
        ]
        rise = torch.stack(each).mean()
        assert torch.allclose(with_anchor.loss, pairs_only.loss + 0.3 * rise, rtol=1e-10)
        assert float(with_anchor.metrics["anchor_rise"]) == pytest.approx(float(rise), rel=1e-10, abs=1e-12)
        assert with_anchor.size == pairs_only.size == 2  # counted in pairs
        assert "anchor_rise" not in pairs_only.metrics  # validation batches are pairs alone
        rises += [float(r) for r in each]
    assert min(rises) == 0 < max(rises)  # the hinge: records below their start cost nothing

    # the starting NLL travels in checkpoints: a resumed run keeps it, and refuses to score it from moved weights
    ckpt = {}
    module.objective.save(ckpt)
    resumed = simpo_module(tiny_path)
    resumed.objective.load(ckpt)
    assert torch.equal(resumed.objective.anchor.reference, module.objective.anchor.reference)
    bare = simpo_module(tiny_path)
    bare.objective.load({"politician_lm_simpo": True})  # saved by a run without an anchor
    with pytest.raises(UserError, match="saved without data.anchor_path, so its anchor's starting NLL is unknown"):
        bare.objective.anchor.ensure(dm, module.scorer, module.device)
    for n, edit in ((8, ""), (10, " Changed.")):  # another size, or the same size with other words
        anchor = anchor_folder(tmp_path / f"o{n}", n)
        rows = [json.loads(line) for line in open(f"{anchor}/train.jsonl")]
        write_jsonl(Path(anchor) / "train.jsonl", [{**r, "completion": r["completion"] + edit} for r in rows])
        other = pair_datamodule(tmp_path / f"o{n}", tiny_path, pair_rows(6), anchor_path=anchor)
        with pytest.raises(UserError, match=f"'s {n} training records differ from the 10 the run started with"):
            resumed.objective.anchor.ensure(other, module.scorer, module.device)


def test_the_bucketed_kl_is_the_kl_over_the_start_s_top_tokens_and_one_bucket_for_the_rest():
    torch.manual_seed(0)
    start = torch.log_softmax(torch.randn(6, 12, dtype=torch.float64) * 3, -1)
    now_logits = torch.randn(6, 12, dtype=torch.float64, requires_grad=True)
    now = torch.log_softmax(now_logits, -1)
    full = (start.exp() * (start - now)).sum(-1)  # KL(start || now) over the whole vocabulary

    ids, buckets = top_buckets(start, 11)  # one token left over: its bucket is that token, so the KL is exact
    assert torch.allclose(bucket_kl(buckets, ids, now), full, rtol=1e-12, atol=0)
    ids, buckets = top_buckets(start, 3)
    assert torch.equal(ids, start.topk(3, -1).indices)
    assert torch.allclose(buckets[:, -1].exp(), 1 - start.exp().gather(-1, ids).sum(-1), rtol=1e-12)
    coarse = bucket_kl(buckets, ids, now)
    manual = []
    for row in range(6):  # 3 tokens and the rest, by hand
        rest = [t for t in range(12) if t not in ids[row].tolist()]
        q = [start[row, t].exp() for t in ids[row]] + [start[row, rest].exp().sum()]
        p = [now[row, t].exp() for t in ids[row]] + [now[row, rest].exp().sum()]
        manual.append(sum(a * (a.log() - b.log()) for a, b in zip(q, p)))
    assert torch.allclose(coarse, torch.stack(manual), rtol=1e-10)
    assert (coarse >= 0).all() and (coarse <= full + 1e-12).all()  # merging tokens never raises a KL
    assert float(bucket_kl(buckets, ids, start).abs().max()) < 1e-14  # 0 where nothing moved
    assert torch.autograd.gradcheck(lambda x: bucket_kl(buckets, ids, torch.log_softmax(x, -1)), (now_logits,))


def test_the_kl_anchor_pays_for_every_move_of_the_anchor_records_distributions(tmp_path, tiny_path):
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(6), batch_size=2, anchor_path=anchor_folder(tmp_path))
    module = simpo_module(tiny_path, anchor_weight=0.3, anchor_kind="kl")
    module.configure_model()
    module.model.double()
    randomize_lora_b(module.model, std=0.1)

    def own_logps(i):  # one record alone: log-softmax rows of its labelled positions from the full logits, float64
        row = dm.anchor_dataset[i]
        logprobs = torch.log_softmax(module.model(input_ids=torch.tensor([row["input_ids"]])).logits[0], dim=-1)
        return torch.stack([logprobs[t - 1] for t in range(1, len(row["labels"])) if row["labels"][t] != -100])

    start = [own_logps(i).detach() for i in range(10)]
    module.objective.prepare(dm, module.scorer, module.device)
    anchor = module.objective.anchor
    assert anchor.reference.dtype == torch.float64 and anchor.reference.shape[::2] == (10, TOP_K + 1)
    labelled = [sum(t != -100 for t in dm.anchor_dataset[i]["labels"][1:]) for i in range(10)]
    assert anchor.reference.shape[1] == max(labelled) and anchor.ids.dtype == torch.int32  # sized by completions
    step = module.objective.step
    batch = batches(dm.train_dataloader(), 0)[0]
    assert float(step(module.scorer, batch, "train", module.device).metrics["anchor_kl"]) < 1e-12

    randomize_lora_b(module.model, std=0.1, seed=1)  # the weights move
    for batch in batches(dm.train_dataloader(), 0):
        with_anchor = step(module.scorer, batch, "train", module.device)
        pairs_only = step(module.scorer, batch["pairs"], "train", module.device)
        kls = []
        for i in batch["anchor"]["index"].tolist():
            ids, buckets = top_buckets(start[i])
            kls.append(bucket_kl(buckets, ids, own_logps(i)))
        kl = torch.cat(kls).mean()  # a mean over the batch's completion positions
        assert float(kl) > 1e-4
        assert torch.allclose(with_anchor.loss, pairs_only.loss + 0.3 * kl, rtol=1e-10)
        assert float(with_anchor.metrics["anchor_kl"]) == pytest.approx(float(kl), rel=1e-10)

    ckpt = {}  # the start's buckets travel in checkpoints, and a resume with the other kind is refused
    module.objective.save(ckpt)
    resumed = simpo_module(tiny_path, anchor_kind="kl")
    resumed.objective.load(ckpt)
    assert torch.equal(resumed.objective.anchor.reference.nan_to_num(), anchor.reference.nan_to_num())
    assert torch.equal(resumed.objective.anchor.ids, anchor.ids)
    with pytest.raises(UserError, match="the checkpoint's anchor is model.anchor_kind kl; resume with it"):
        simpo_module(tiny_path).objective.load(ckpt)
    with pytest.raises(UserError, match="unknown model.anchor_kind 'l2'; use 'hinge' or 'kl'"):
        simpo_module(tiny_path, anchor_kind="l2")


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


def anchored_fit(tmp_path, tiny_path, weight, kind="hinge"):
    """Six SimPO steps on pairs that push down the anchor's kind of text (the AI answer chosen over the persona's);
    the logged penalty (before its weight) after every step."""
    import lightning.pytorch as L

    from politician_lm.callbacks.throughput import QLoRAThroughput
    from tests.model.test_preference import dpo_trainer

    L.seed_everything(0)
    rows = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in pair_rows(8)]
    dm = pair_datamodule(tmp_path, tiny_path, rows, batch_size=4, anchor_path=anchor_folder(tmp_path))
    module = simpo_module(
        tiny_path,
        quantization="nf4",
        anchor_weight=weight,
        anchor_kind=kind,
        optimizer=partial(torch.optim.AdamW, lr=2e-2),
    )
    logged = "train_anchor_kl" if kind == "kl" else "train_anchor_rise"
    rise = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            rise.append(float(trainer.callback_metrics[logged]))

    trainer = dpo_trainer(tmp_path / "run", 6)
    throughput = QLoRAThroughput(every_n_steps=2)
    trainer.callbacks += [Probe(), throughput]
    trainer.fit(module, datamodule=dm)
    assert f"val_{logged[6:]}" not in trainer.callback_metrics  # validation: the pairs alone
    assert throughput._sequences == 6 * (4 + 4)  # throughput counts both: 4 pair rows and 4 anchor rows a step
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.ckpt", weights_only=False)
    assert len(ckpt["politician_lm_anchor_reference"]["kl" if kind == "kl" else "nll"]) == len(dm.anchor_dataset)
    return rise


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hinge", "kl"])
def test_the_anchor_holds_back_what_the_pairs_push_down(tmp_path, tiny_path, kind):
    free = anchored_fit(tmp_path / "free", tiny_path, 0.0, kind)
    held = anchored_fit(tmp_path / "held", tiny_path, 5.0, kind)
    assert free[0] < 1e-6 and held[0] < 1e-6  # nothing to pay at the start
    assert free[-1] > 0.1  # the pairs alone raise the anchor records' NLL ...
    assert held[-1] < free[-1] / 2  # ... and the anchor's penalty holds it back
