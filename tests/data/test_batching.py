"""Padding-free packing and length grouping: same per-example loss as unpacked, no cross-example attention."""

import pytest
import torch
import torch.nn.functional as F

from politician_lm import PoliticianDataModule, PoliticianLM
from politician_lm.batch import IGNORE_INDEX
from politician_lm.data.batching import EpochBatchSampler, best_fit_decreasing
from tests.helpers import first_train_batch, randomize_lora_b, write_jsonl


def rows(n):
    return [
        {
            "prompt": f"USER: Question {i}: " + "what about jobs " * (i % 5),
            "completion": "POLITICIAN: Folks, " + "we build " * (1 + i % 7),
        }
        for i in range(n)
    ]


def test_best_fit_decreasing_fills_bins_without_overflow():
    lengths = [7, 5, 5, 4, 3, 3, 2, 1, 9, 6]
    bins = best_fit_decreasing(lengths, 10, seed=0)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 5  # 45 tokens: the optimum for capacity 10
    assert bins == best_fit_decreasing(lengths, 10, seed=0)


def test_batch_plans_are_seeded_per_epoch_and_resume_part_way():
    lengths = [3 + (i * 7) % 20 for i in range(60)]
    for packing in (True, False):
        s = EpochBatchSampler(lengths, 4, seed=1, packing=packing, max_length=32)
        e0 = list(s)
        assert list(s) == e0 and sorted(i for b in e0 for i in b) == list(range(60))
        s.set_epoch(1)
        e1 = list(s)
        assert e1 != e0
        s.start = 2
        assert list(s) == e1[2:]
    grouped = list(EpochBatchSampler(lengths, 4, seed=1, packing=False, max_length=32))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped) / len(grouped)
    assert spread < 3  # similar lengths in a batch


def test_batch_plans_shard_across_ranks_disjoint_and_equal_in_count():
    lengths = [3 + (i * 7) % 20 for i in range(61)]
    for packing in (True, False):
        whole = list(EpochBatchSampler(lengths, 4, seed=1, packing=packing, max_length=32))
        shards = [
            list(EpochBatchSampler(lengths, 4, seed=1, packing=packing, max_length=32, num_replicas=3, rank=r))
            for r in range(3)
        ]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-len(whole) // 3)
        seen = [tuple(b) for s in shards for b in s]
        assert set(seen) == {tuple(b) for b in whole}  # every batch of the plan, on one rank or another
        assert len(seen) - len(set(seen)) == len(shards[0]) * 3 - len(whole)  # only the padding repeats
        s = EpochBatchSampler(lengths, 4, seed=1, packing=packing, max_length=32, num_replicas=3, rank=1)
        s.start = 2
        assert list(s) == shards[1][2:]
    # fewer batches than ranks: every rank still gets one (a rank with none would hang the others in DDP)
    few = [
        list(EpochBatchSampler([5, 6], 2, seed=1, packing=False, max_length=32, num_replicas=4, rank=r))
        for r in range(4)
    ]
    assert [len(b) for b in few] == [1, 1, 1, 1]


def test_packed_loss_equals_unpacked_per_example(tmp_path, tiny_path):
    dm, batch = first_train_batch(tmp_path, tiny_path, rows(24), batch_size=2, packing=True)
    assert batch["input_ids"].shape[1] <= 64 and "attention_mask" not in batch  # transformers masks from position_ids

    model = PoliticianLM(tiny_path, lora_r=4, lora_dropout=0.0)
    model.configure_model()
    randomize_lora_b(model)
    with torch.no_grad():
        model.model.eval()
        logits = model(batch["input_ids"], position_ids=batch["position_ids"]).logits
        checked = 0
        for r in range(batch["input_ids"].shape[0]):
            pos = batch["position_ids"][r].tolist()
            starts = [i for i, p in enumerate(pos) if p == 0]
            real = int((batch["labels"][r] != IGNORE_INDEX).nonzero().max()) + 1  # end of the last example
            bounds = [s for s in starts if s < real] + [real]
            for a, b in zip(bounds[:-1], bounds[1:]):
                ids, labels = batch["input_ids"][r, a:b], batch["labels"][r, a:b]
                assert labels[0] == IGNORE_INDEX  # never predicted from the previous example
                alone = model(ids[None]).logits[0]
                packed_loss = F.cross_entropy(logits[r, a : b - 1], labels[1:], ignore_index=IGNORE_INDEX)
                alone_loss = F.cross_entropy(alone[:-1], labels[1:], ignore_index=IGNORE_INDEX)
                torch.testing.assert_close(packed_loss, alone_loss, rtol=0, atol=1e-5)
                checked += 1
        assert checked >= 3 and checked == int(batch["sequences"])
        # FlashAttention layout: the rows flattened into one sequence give the same loss
        rows_loss = model.scorer.token_loss(batch)
        model.scorer.flatten_packed = True
        torch.testing.assert_close(model.scorer.token_loss(batch), rows_loss, rtol=0, atol=1e-5)
    batches = list(dm.train_dataloader())
    real = sum(int(b["real_tokens"]) for b in batches)
    assert real == sum(len(x) for x in dm.train_dataset["input_ids"])
    assert 1 - real / sum(b["input_ids"].numel() for b in batches) <= 0.05  # padding fraction at most 5%


@pytest.mark.slow
def test_qlora_throughput_logs_real_tokens_padding_memory_and_mfu(tmp_path, tiny_path):
    import csv
    from functools import partial
    from pathlib import Path

    import lightning.pytorch as L
    from lightning.pytorch.loggers import CSVLogger

    from politician_lm.callbacks import QLoRAThroughput

    write_jsonl(tmp_path / "d" / "train.jsonl", rows(32))
    write_jsonl(tmp_path / "d" / "val.jsonl", rows(4))
    results = {}
    for packing in (False, True):
        dm = PoliticianDataModule(
            data_path=str(tmp_path / "d"),
            tokenizer=tiny_path,
            batch_size=4,
            max_length=64,
            packing=packing,
            cache_dir=str(tmp_path / "c"),
        )
        model = PoliticianLM(tiny_path, lora_r=4, optimizer=partial(torch.optim.AdamW, lr=1e-3))
        logger = CSVLogger(tmp_path / "logs", name=str(packing))
        trainer = L.Trainer(
            default_root_dir=tmp_path / str(packing),
            max_steps=4,
            accelerator="cpu",
            logger=logger,
            enable_progress_bar=False,
            enable_checkpointing=False,
            limit_val_batches=0,
            callbacks=[QLoRAThroughput(every_n_steps=2)],
        )
        trainer.fit(model, datamodule=dm)
        metrics = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
        logged = [r for r in csv.DictReader(metrics) if r.get("perf/mfu")]
        assert [int(r["step"]) for r in logged] == [2, 4]  # one row per window of 2 batches
        results[packing] = {k: float(v) for k, v in logged[-1].items() if k.startswith("perf/")}
    for m in results.values():
        assert m["perf/tokens_per_s"] > 0 and m["perf/peak_memory_mb"] > 100 and 0 < m["perf/mfu"] < 1
    assert results[True]["perf/padding_fraction"] < results[False]["perf/padding_fraction"]


@pytest.mark.slow
def test_packed_fit_reshuffles_every_epoch_and_resumes_on_the_same_batches(tmp_path, tiny_path):
    """Lightning calls set_epoch on a loader's sampler only: the batch plan must be that sampler (a regression)."""
    from functools import partial

    import lightning.pytorch as L

    write_jsonl(tmp_path / "d" / "train.jsonl", rows(40))
    write_jsonl(tmp_path / "d" / "val.jsonl", rows(4))

    class Seen(L.Callback):
        def __init__(self):
            self.batches = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batches.append((trainer.current_epoch, int(batch["input_ids"].sum()), int(batch["sequences"])))

    def fit(max_epochs, ckpt_path=None):
        seen = Seen()
        dm = PoliticianDataModule(
            data_path=str(tmp_path / "d"),
            tokenizer=tiny_path,
            batch_size=2,
            max_length=64,
            packing=True,
            cache_dir=str(tmp_path / "c"),
        )
        model = PoliticianLM(tiny_path, lora_r=4, optimizer=partial(torch.optim.AdamW, lr=1e-3))
        trainer = L.Trainer(
            default_root_dir=tmp_path / "run",
            max_epochs=max_epochs,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[seen],
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return seen.batches

    whole = fit(3)
    epochs = [[b for b in whole if b[0] == e] for e in range(3)]
    assert len(epochs[0]) >= 3 and sum(n for *_, n in epochs[0]) == 40
    assert (
        [b[1:] for b in epochs[0]] != [b[1:] for b in epochs[1]] != [b[1:] for b in epochs[2]]
    )  # a new plan each epoch
    first = fit(1)
    assert first == epochs[0]
    resumed = fit(3, ckpt_path=str(tmp_path / "run" / "checkpoints" / f"epoch=0-step={len(first)}.ckpt"))
    assert resumed == epochs[1] + epochs[2]


def test_qlora_flops_count_the_head_on_completion_tokens_and_leave_out_embeddings(tiny_path):
    from politician_lm.callbacks.throughput import QLoRAFlops, count_params, linear_shapes

    model = PoliticianLM(tiny_path, lora_r=4)
    model.configure_model()
    counts = QLoRAFlops.of(model)
    vocab_x_hidden = 1536 * 128  # tiny model: untied embedding and head
    assert counts.embed == counts.head == vocab_x_hidden and counts.head_on_labels_only
    assert counts.frozen + counts.embed + counts.head == count_params(model)[0]
    assert (counts.layers, counts.hidden) == (2, 128)
    # 10 real tokens in 2 sequences, the head on 4 of them: body FLOPs on every token, head FLOPs on those 4
    body = 4 * counts.frozen + 6 * counts.trainable + 6 * 2 * 128 * 5
    assert counts.flops(10, 2, 4) == body * 10 + 4 * vocab_x_hidden * 4
    # a measured peak times the linear shapes holding the most frozen weights: the MLP's and the head's here
    assert set(linear_shapes(model.model)[:2]) == {(128, 384), (128, 1536)}
