"""Preference tuning: pair records, pair batches, the DPO loss and gradients in float64, a DPO fit with its
reference and resume (``politician-lm pairs`` is tested in tests/commands/test_pairs.py)."""

import json
import math
from functools import partial

import pytest
import torch
from safetensors.torch import load_file

from politician_lm.cli import main
from politician_lm.data import records
from politician_lm.errors import UserError
from tests.helpers import pc_rows, randomize_lora_b, write_jsonl


def pair_rows(n: int, kind: str = "policy") -> list[dict]:
    return [
        {
            "prompt": r["prompt"],
            "chosen": r["completion"],
            "rejected": f"POLITICIAN: As an AI assistant, I can offer a balanced overview of topic {i}.",
            "kind": kind,
        }
        for i, r in enumerate(pc_rows(n, kind))
    ]


CHAT_PAIR = {
    "prompt": [{"role": "user", "content": "Who are you?"}],
    "chosen": [{"role": "assistant", "content": "I'm Joe Biden."}],
    "rejected": [{"role": "assistant", "content": "I am an AI assistant."}],
}
IMPLICIT_PAIR = {
    "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Folks, hello."}],
    "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
}


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"prompt": "Q", "chosen": "A"}, "missing key(s) 'rejected'"),
        ({"prompt": "Q", "chosen": "A", "rejected": "  "}, "'rejected' is empty"),
        ({"prompt": 3, "chosen": "A", "rejected": "B"}, "'prompt' must be a string or a list of messages"),
        ({**CHAT_PAIR, "chosen": [{"role": "user", "content": "x"}]}, "'chosen' must be one assistant turn"),
        ({**CHAT_PAIR, "prompt": [{"role": "robot", "content": "x"}]}, "prompt[0] has role 'robot'"),
        ({**CHAT_PAIR, "prompt": [{"role": "assistant", "content": "x"}]}, "the last message of 'prompt' must not be"),
        (
            {**IMPLICIT_PAIR, "rejected": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "x"}]},
            "must share the same turns before the last one",
        ),
        ({"chosen": "A", "rejected": "B"}, "without 'prompt', 'chosen' must be a list of messages"),
        ({"prompt": "Q", "completion": "A"}, "a prompt/completion record among preference pairs"),
    ],
    ids=lambda x: str(x)[:30] if isinstance(x, str) else None,
)
def test_bad_pair_records_name_file_and_line(tmp_path, record, problem):
    path = write_jsonl(tmp_path / "pairs.jsonl", [pair_rows(1)[0], record])
    files = records.discover(path)
    assert records.detect_preference(files)
    with pytest.raises(UserError) as e:
        records.validate(files, preference=True)
    assert str(e.value).startswith(f"{path}:2: ") and problem in str(e.value)


def test_pair_forms_become_the_training_record_they_came_from(tmp_path):
    for form in (CHAT_PAIR, IMPLICIT_PAIR, pair_rows(1)[0]):
        assert records.check_record(form, preference=True) is None
    row = records.to_preference(CHAT_PAIR)
    assert row["messages"] == [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I'm Joe Biden."},
    ]
    assert row["rejected"] == "I am an AI assistant."
    assert records.to_preference(IMPLICIT_PAIR)["messages"] == IMPLICIT_PAIR["chosen"]
    # the same messages as the source record, so the hashed split puts both on the same side
    sft = pc_rows(1)[0]
    assert records.to_preference(pair_rows(1)[0])["messages"] == records.to_conversation(sft)["messages"]
    with pytest.raises(UserError, match=r"train.jsonl:2: a preference pair"):
        records.validate(records.discover(write_jsonl(tmp_path / "train.jsonl", [sft, pair_rows(1)[0]])))


def pair_datamodule(tmp_path, tiny_path, rows, **kw):
    from politician_lm import PoliticianDataModule

    write_jsonl(tmp_path / "pairs" / "train.jsonl", rows)
    write_jsonl(tmp_path / "pairs" / "val.jsonl", rows[:3])
    dm = PoliticianDataModule(
        data_path=str(tmp_path / "pairs"),
        tokenizer=tiny_path,
        max_length=kw.pop("max_length", 96),
        cache_dir=str(tmp_path / "cache"),
        batch_size=kw.pop("batch_size", 3),
        **kw,
    )
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
def test_pair_rows_hold_the_prompt_once_and_mask_exactly_each_answer(tmp_path, tiny_path, prompt_format):
    """Each pair is one row: prompt, chosen answer, rejected answer. Read back through its segments, positions and
    targets, the row must give exactly the two sequences `encode` makes, and the mask must let neither answer see the
    other."""
    from politician_lm.batch import SEGMENT_CHOSEN, SEGMENT_PAD, SEGMENT_PROMPT, SEGMENT_REJECTED
    from politician_lm.data.tokenize import adds_bos, encode
    from politician_lm.model.preference import pair_attention_mask

    rows = [*pair_rows(4), {**CHAT_PAIR, "kind": "identity"}]
    dm = pair_datamodule(tmp_path, tiny_path, rows, prompt_format=prompt_format, politician="biden", max_length=512)
    tok = dm.tokenizer
    batch = next(iter(dm.reference_dataloaders()["train"]))
    n = batch["index"].shape[0]
    assert batch["input_ids"].shape[0] == n and batch["index"].tolist() == list(range(n))
    mask = pair_attention_mask(batch["segments"])[:, 0]
    for i in range(n):
        conv = dm.train_dataset[i]["messages"]
        seg = batch["segments"][i]
        real = seg != SEGMENT_PAD
        assert real.sum() == int(real[: int(real.sum())].sum())  # padding only at the end
        for side, answer, targets in (
            (SEGMENT_CHOSEN, conv[-1]["content"], batch["chosen_targets"][i]),
            (SEGMENT_REJECTED, dm.train_dataset[i]["rejected"], batch["rejected_targets"][i]),
        ):
            prompt, completion = dm.style.render([*conv[:-1], {"role": "assistant", "content": answer}], tok)
            expected = encode(tok, prompt, completion, 512, add_bos=adds_bos(tok))
            view = ((seg == SEGMENT_PROMPT) | (seg == side)).nonzero()[:, 0]  # this answer's sequence in the row
            assert batch["input_ids"][i, view].tolist() == expected["input_ids"]
            assert batch["position_ids"][i, view].tolist() == list(range(len(view)))
            # the logits at view[t] predict the token at t+1: exactly the labelled tokens, nothing else
            assert targets[view].tolist() == expected["labels"][1:] + [-100]
            assert int((targets != -100).sum()) == sum(t != -100 for t in expected["labels"])
            # causal inside the answer's own sequence ...
            assert torch.equal(mask[i][view][:, view], torch.ones(len(view), len(view), dtype=torch.bool).tril())
            labelled = [t for t in expected["labels"] if t != -100]
            assert (
                labelled[-1] == tok.eos_token_id
                and tok.decode(labelled[:-1]).strip() == completion.replace(tok.eos_token, "").strip()
                or prompt_format == "chat"
            )
        # ... and never across: no chosen token sees a rejected one, nor the other way round; padding sees only itself
        chosen, rejected = seg == SEGMENT_CHOSEN, seg == SEGMENT_REJECTED
        assert not mask[i][chosen][:, rejected].any() and not mask[i][rejected][:, chosen].any()
        pads = int((~real).sum())
        assert not mask[i][real][:, ~real].any()
        assert torch.equal(mask[i][~real][:, ~real], torch.eye(pads, dtype=torch.bool))
        assert (seg == SEGMENT_PROMPT).sum() > 0 and chosen.sum() > 0 and rejected.sum() > 0


def test_pairs_refuse_packing_in_one_line(tmp_path, tiny_path):
    with pytest.raises(UserError, match="not packed"):
        pair_datamodule(tmp_path, tiny_path, pair_rows(4), packing=True)


def float64_module(tiny_path, attn_implementation="sdpa"):
    from politician_lm import PoliticianLM

    torch.manual_seed(0)  # LoRA A's initialisation: the finite differences below must not depend on the tests before
    model = PoliticianLM(
        model_name_or_path=tiny_path,
        attn_implementation=attn_implementation,
        quantization="none",
        lora_r=4,
        lora_dropout=0.0,
        objective="dpo",
        beta=0.3,
        sft_weight=0.7,
    )
    model.configure_model()
    model.model.double()
    randomize_lora_b(model.model, std=0.1)
    return model


def independent_loss(module, dataset, reference, beta, sft_weight):
    """The DPO loss in float64 without the module's code: every answer scored in its own forward pass, prompt +
    answer alone with plain causal attention, token by token from the full logits."""
    sums, counts = [], []
    for side in ("", "rejected_"):
        for i in range(len(dataset)):
            ids, labels = dataset[i][f"{side}input_ids"], dataset[i][f"{side}labels"]
            logits = module.model(input_ids=torch.tensor([ids])).logits.double()
            logprobs = torch.log_softmax(logits[0], dim=-1)
            total, count = torch.zeros((), dtype=torch.float64), 0
            for t in range(1, len(ids)):
                if labels[t] != -100:
                    total = total + logprobs[t - 1, labels[t]]
                    count += 1
            sums.append(total)
            counts.append(count)
    n = len(dataset)
    losses = []
    for i in range(n):
        h = beta * ((sums[i] - reference[i, 0]) - (sums[n + i] - reference[i, 1]))
        losses.append(torch.log1p(torch.exp(-h)))  # -log sigmoid(h)
    nll = -sum(sums[:n]) / sum(counts[:n])
    return sum(losses) / n + sft_weight * nll


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])  # boolean mask / additive float mask
def test_dpo_loss_and_gradients_match_an_independent_float64_computation(tmp_path, tiny_path, attn_implementation):
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(3) + [{**CHAT_PAIR, "kind": "identity"}], batch_size=4)
    module = float64_module(tiny_path, attn_implementation)
    batch = next(iter(dm.reference_dataloaders()["train"]))
    reference = torch.tensor([[-60.0, -70.0], [-55.5, -40.0], [-80.0, -81.0], [-20.0, -30.0]], dtype=torch.float64)
    module.reference = {"train": reference}
    params = [p for p in module.parameters() if p.requires_grad]

    out = module._preference(batch, "train")
    assert out.loss.dtype == torch.float64
    grads = torch.autograd.grad(out.loss, params)
    expected = independent_loss(module, dm.train_dataset, reference, 0.3, 0.7)
    expected_grads = torch.autograd.grad(expected, params)
    # float32 rounding inside RMSNorm (and eager's softmax) even in float64: ~1e-10 relative; see the gradients below
    assert abs(out.loss.item() - expected.item()) < 1e-8 * max(1.0, abs(expected.item()))
    for g, e in zip(grads, expected_grads):
        # The model's RMSNorm rounds through float32 even in float64, and the two layouts (one shared-prompt row
        # against two separate sequences) round differently there: agreement to ~1e-8 of the largest gradient (seen:
        # 1.7e-8). A wrong mask or target is off by orders of magnitude more.
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-7 * float(e.abs().max()))
    assert any(g.abs().max() > 1e-6 for g in grads)  # a real gradient, not zeros matching zeros

    # central finite differences on single LoRA weights: the gradient of the module's own loss, without autograd.
    # The model's RMSNorm rounds through float32 internally, so the step is 1e-3, not 1e-6 (noise ~1e-5 here).
    probe = [(i, j) for i, p in enumerate(params) for j in (0, p.numel() - 1)][:6]
    for i, j in probe:
        flat, eps = params[i].data.view(-1), 1e-3
        with torch.no_grad():
            flat[j] += eps
            up = module._preference(batch, "train").loss.item()
            flat[j] -= 2 * eps
            down = module._preference(batch, "train").loss.item()
            flat[j] += eps
        g = grads[i].view(-1)[j].item()
        assert abs((up - down) / (2 * eps) - g) < 1e-4 + 1e-3 * abs(g)


def test_validation_before_training_reads_the_reference_pass_and_equals_scoring_the_pairs(tmp_path, tiny_path):
    """Until the first training step the policy is the reference, so the validation before training reuses the
    reference pass; that must give what scoring the pairs gives, and stop as soon as a training batch starts."""
    dm = pair_datamodule(tmp_path, tiny_path, pair_rows(3) + [{**CHAT_PAIR, "kind": "identity"}], batch_size=2)
    module = float64_module(tiny_path)
    loaders = dm.reference_dataloaders()
    module.reference = {split: module._reference_logps(loader) for split, loader in loaders.items()}
    for batch in loaders["val"]:
        with torch.no_grad():
            module._reference_is_policy = True
            read = module._preference(batch, "val")
            module._reference_is_policy = False
            scored = module._preference(batch, "val")
        assert read.dpo_loss.item() == pytest.approx(math.log(2), abs=1e-6)
        for key, value in read.metrics().items():
            assert value.item() == pytest.approx(scored.metrics()[key].item(), rel=1e-6, abs=1e-6), key
        assert scored.sft_loss.item() > 0
    module._reference_is_policy = True
    module.on_train_batch_start(batch, 0)
    assert not module._reference_is_policy


def test_dpo_loss_gradient_in_the_log_probabilities_is_the_closed_form():
    from politician_lm.model.preference import dpo_loss

    torch.manual_seed(0)
    chosen, rejected = (
        (torch.randn(5, dtype=torch.float64) * 10 - 50).requires_grad_(),
        (torch.randn(5, dtype=torch.float64) * 10 - 50).requires_grad_(),
    )
    ref = torch.randn(5, 2, dtype=torch.float64) * 10 - 50
    tokens, beta, w = torch.tensor([7, 9, 3, 12, 5]), 0.2, 0.5
    out = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], tokens, beta, w)
    d_chosen, d_rejected = torch.autograd.grad(out.loss, (chosen, rejected))
    h = beta * ((chosen - ref[:, 0]) - (rejected - ref[:, 1])).detach()
    weight = beta * torch.sigmoid(-h) / 5  # d(-log sigmoid(h))/dh = -sigmoid(-h)
    assert torch.allclose(d_chosen, -weight - w / 36.0, rtol=1e-12, atol=0)
    assert torch.allclose(d_rejected, weight, rtol=1e-12, atol=0)
    assert out.loss.item() == pytest.approx(
        float(torch.nn.functional.softplus(-h).mean() - w * chosen.sum() / 36), rel=1e-12
    )
    assert out.metrics()["reward_accuracy"].item() == float((h > 0).float().mean())


def dpo_trainer(root, max_steps, **kw):
    import lightning.pytorch as L

    from politician_lm import AdapterExport
    from politician_lm.callbacks.checkpoint import STEP_DEFAULTS, StepCheckpoint

    step = StepCheckpoint(dirpath=str(root / "ckpt"), **{**STEP_DEFAULTS, "every_n_train_steps": 2})
    return L.Trainer(
        default_root_dir=root,
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=-1,
        val_check_interval=2,
        callbacks=[AdapterExport(), step],
        **kw,
    )


def dpo_module(tiny_path, init_adapter=None):
    from politician_lm import PoliticianLM

    return PoliticianLM(
        model_name_or_path=tiny_path,
        lora_r=4,
        lora_dropout=0.0,
        objective="dpo",
        beta=0.5,
        sft_weight=0.1,
        init_adapter=init_adapter,
        optimizer=partial(torch.optim.AdamW, lr=2e-2),
    )


def trained_state(module):
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_dpo_fit_starts_at_its_reference_learns_and_resumes_exactly(tmp_path, tiny_path):
    import lightning.pytorch as L

    from tests.helpers import fit_adapter

    # the previous stage's adapter; its LoRA dropout (which the DPO stage keeps) makes the resume restore the RNG too
    sft = fit_adapter(tmp_path / "sft", tiny_path, pc_rows(12), max_steps=2, lora_dropout=0.1)
    rows = pair_rows(12)
    L.seed_everything(0)
    dm = pair_datamodule(tmp_path / "a", tiny_path, rows, batch_size=4)
    module = dpo_module(tiny_path, str(sft))
    seen = {}

    class Probe(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            seen.setdefault("first", {k: float(v) for k, v in trainer.callback_metrics.items()})

    class StepLosses(L.Callback):
        def __init__(self):
            self.losses = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses[trainer.global_step] = outputs["loss"].item()

    trainer = dpo_trainer(tmp_path / "a" / "run", 6)
    straight = StepLosses()
    trainer.callbacks += [Probe(), straight]
    trainer.fit(module, datamodule=dm)
    start = seen["first"]  # the sanity check: the policy is still its own reference
    assert abs(start["val_reward_margin"]) < 1e-4 and start["val_reward_accuracy"] == 0.0
    assert abs(start["val_dpo_loss"] - math.log(2)) < 1e-4
    assert abs(start["val_loss"] - (math.log(2) + 0.1 * start["val_sft_loss"])) < 1e-4
    end = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert end["val_reward_accuracy"] == 1.0 and end["val_reward_margin"] > 0 and end["val_dpo_loss"] < math.log(2)
    assert {"train_reward_accuracy", "train_reward_margin", "train_logps_chosen", "train_logps_rejected"} <= end.keys()
    ckpt = torch.load(tmp_path / "a" / "run" / "ckpt" / "last.ckpt", weights_only=False)
    reference = ckpt["politician_lm_dpo_reference"]["logps"]
    assert reference["train"].shape == (12, 2) and torch.isfinite(reference["train"]).all()

    # the same run stopped mid-epoch after its second step (3 batches an epoch) and resumed from last.ckpt: the
    # reference comes from the checkpoint, not the new weights, and the rest is the uninterrupted run bit for bit
    class StopAt2(L.Callback):  # same schedule as the 6-step run
        def on_train_batch_end(self, trainer, *args):
            trainer.should_stop = trainer.global_step >= 2

    L.seed_everything(0)
    first = dpo_trainer(tmp_path / "b" / "run", 6)
    stopped = StepLosses()
    first.callbacks += [StopAt2(), stopped]
    first.fit(
        dpo_module(tiny_path, str(sft)), datamodule=pair_datamodule(tmp_path / "b", tiny_path, rows, batch_size=4)
    )
    assert first.global_step == 2
    L.seed_everything(1)  # the checkpoint brings the RNG state; the seed at hand must not matter
    resumed_module = dpo_module(tiny_path, str(sft))
    resumed = dpo_trainer(tmp_path / "b" / "run", 6)
    continued = StepLosses()
    resumed.callbacks.append(continued)
    resumed.fit(
        resumed_module,
        datamodule=pair_datamodule(tmp_path / "b2", tiny_path, rows, batch_size=4),
        ckpt_path=str(tmp_path / "b" / "run" / "ckpt" / "last.ckpt"),
    )
    assert torch.equal(resumed_module.reference["train"], reference["train"]) and resumed.global_step == 6
    assert sorted(continued.losses) == [3, 4, 5, 6] and {**stopped.losses, **continued.losses} == straight.losses
    straight_state = trained_state(module)
    assert all(torch.equal(w, straight_state[n]) for n, w in trained_state(resumed_module).items())
    a, b = (load_file(tmp_path / r / "run" / "adapters" / "last" / "adapter_model.safetensors") for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # other data under the same checkpoint, or an SFT checkpoint: one line each
    other = dpo_trainer(tmp_path / "b" / "run", 8)
    with pytest.raises(UserError, match="pairs differ from those the run started on"):
        other.fit(
            dpo_module(tiny_path, str(sft)),
            datamodule=pair_datamodule(tmp_path / "c", tiny_path, pair_rows(13), batch_size=4),
            ckpt_path=str(tmp_path / "b" / "run" / "ckpt" / "last.ckpt"),
        )


@pytest.mark.slow
def test_objective_and_data_must_agree(tmp_path, tiny_path, chdir_root, capsys):
    write_jsonl(tmp_path / "pairs.jsonl", pair_rows(20))
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                "--config",
                "configs/demo.yaml",
                "--data.data_path",
                str(tmp_path / "pairs.jsonl"),
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
                "--data.cache_dir",
                str(tmp_path / "cache"),
            ]
        )
    assert e.value.code == 2
    assert "holds preference pairs; train them with --model.objective dpo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                "configs/demo.yaml",
                "--model.objective",
                "dpo",
                "--trainer.default_root_dir",
                str(tmp_path / "run2"),
                "--data.cache_dir",
                str(tmp_path / "cache"),
            ]
        )
    assert "model.objective dpo needs preference pairs" in capsys.readouterr().err
    assert not (tmp_path / "run" / "adapters").exists()


@pytest.mark.slow
def test_dpo_stage_continues_the_sft_stage(tmp_path, tiny_path, chdir_root):
    import yaml

    from tests.helpers import ROOT

    data = write_jsonl(tmp_path / "d" / "policy.jsonl", pc_rows(16))
    main(
        [
            "pairs",
            "--data_path",
            str(data.parent),
            "--output_dir",
            str(tmp_path / "pairs"),
            "--base_model",
            tiny_path,
            "--max_new_tokens",
            "16",
            "--max_similarity",
            "1.0",
        ]
    )
    common = {
        "trainer.max_epochs": 1,
        "trainer.enable_progress_bar": False,
        "data.cache_dir": str(tmp_path / "cache"),
        "data.val_fraction": 0.25,
        "trainer.callbacks": [],
    }
    root = tmp_path / "stages"
    (tmp_path / "stages.yaml").write_text(
        yaml.safe_dump(
            {
                "base_config": str(ROOT / "configs" / "demo.yaml"),
                "root_dir": str(root),
                "mode": "continue",
                "stages": [
                    {"name": "sft", "kinds": ["policy"], "overrides": {**common, "data.data_path": str(data.parent)}},
                    {
                        "name": "dpo",
                        "overrides": {
                            **common,
                            "data.data_path": str(tmp_path / "pairs"),
                            "model.objective": "dpo",
                            "data.batch_size": 4,
                        },
                    },
                ],
            }
        )
    )
    main(["stages", "--config", str(tmp_path / "stages.yaml")])
    summary = json.loads((root / "stages.json").read_text())
    assert summary["stages"][1]["init_adapter"] == str(root / "01-sft" / "adapters" / "best")
    metrics = summary["stages"][1]["metrics"]
    assert {
        "val_loss",
        "val_reward_accuracy",
        "val_reward_margin",
        "val_logps_chosen",
        "val_logps_rejected",
    } <= metrics.keys()
    config = yaml.safe_load((root / "02-dpo" / "adapters" / "best" / "training_config.yaml").read_text())
    assert config["model"]["objective"] == "dpo" and config["model"]["init_adapter"].endswith("01-sft/adapters/best")


def test_dpo_with_a_datamodule_that_has_no_pairs_is_one_line(tiny_path):
    """The module states what DPO needs from a DataModule (batch.PreferenceSource) instead of probing for names."""
    import lightning.pytorch as L

    from politician_lm import PoliticianLM
    from politician_lm.batch import PreferenceSource
    from politician_lm.errors import UserError

    class Plain(L.LightningDataModule):
        pass

    assert not isinstance(Plain(), PreferenceSource)
    model = PoliticianLM(model_name_or_path=tiny_path, objective="dpo")
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False, max_steps=1
    )
    with pytest.raises(UserError, match="model.objective dpo needs the PoliticianDataModule"):
        trainer.fit(model, datamodule=Plain())  # refused at setup, before the base model loads
    assert model.model is None
