"""PoliticianLM: real bitsandbytes quantization, LoRA-only checkpoints, resume, and the exported adapter."""

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import bitsandbytes as bnb
import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from politician_lm import AdapterExport, PoliticianDataModule, PoliticianLM
from tests.helpers import first_train_batch, pc_rows, quiet_trainer, randomize_lora_b, write_jsonl

N_LINEAR = 2 * 7  # tiny model: 2 decoder layers x (q, k, v, o, gate, up, down)


def build(tiny_path, **kw):
    kw.setdefault("optimizer", partial(torch.optim.AdamW, lr=1e-3))
    model = PoliticianLM(model_name_or_path=tiny_path, lora_r=4, lora_alpha=8, lora_dropout=0.0, **kw)
    model.configure_model()
    return model


@pytest.mark.parametrize(
    "quant,expected", [("nf4", bnb.nn.Linear4bit), ("fp4", bnb.nn.Linear4bit), ("none", torch.nn.Linear)]
)
def test_quantization_builds_real_bitsandbytes_layers(tiny_path, quant, expected):
    model = build(tiny_path, quantization=quant)
    bases = [
        m.base_layer
        for n, m in model.model.named_modules()
        if hasattr(m, "base_layer") and "lora_A" in dict(m.named_children())
    ]
    assert len(bases) == N_LINEAR
    assert all(type(b) is expected for b in bases), {type(b).__name__ for b in bases}
    if quant != "none":
        for b in bases:
            assert b.weight.quant_type == quant and b.weight.compress_statistics  # double quantization
            assert b.compute_dtype == torch.float32  # fp32 compute on CPU
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_dora_and_rslora_switches(tiny_path):
    model = build(tiny_path, use_dora=True, use_rslora=True)
    cfg = model.model.peft_config["default"]
    assert cfg.use_dora and cfg.use_rslora
    assert any("lora_magnitude_vector" in n for n, p in model.named_parameters() if p.requires_grad)


STEPS_PER_EPOCH = 4  # 16 training rows / batch 4


def _data(tmp_path, tiny_path):
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(16))
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(20)[16:])
    return PoliticianDataModule(
        data_path=str(tmp_path / "d"), tokenizer=tiny_path, batch_size=4, cache_dir=str(tmp_path / "cache")
    )


class StopAfterFirstEpoch(L.Callback):
    """Interrupts fit after epoch 1, as a crash would, without changing the planned schedule."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _fit(tmp_path, tiny_path, max_steps, ckpt_path=None, interrupt=False):
    L.seed_everything(0)
    model = build(tiny_path)
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "run" / "checkpoints", save_last=True, every_n_train_steps=STEPS_PER_EPOCH, save_top_k=-1
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path / "run",
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=2,
        callbacks=[ckpt, AdapterExport(), *([StopAfterFirstEpoch()] if interrupt else [])],
    )
    trainer.fit(model, datamodule=_data(tmp_path, tiny_path), ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.slow
def test_checkpoint_holds_only_trainable_state_and_resume_matches(tmp_path, tiny_path):
    model, trainer = _fit(tmp_path, tiny_path, max_steps=2 * STEPS_PER_EPOCH, interrupt=True)
    assert trainer.global_step == STEPS_PER_EPOCH
    ckpt_file = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_file, weights_only=False)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == set(trainable)
    param_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    optim_bytes = sum(
        t.numel() * t.element_size()
        for s in ckpt["optimizer_states"][0]["state"].values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    size = ckpt_file.stat().st_size
    print(
        f"checkpoint {size} B; trainable {param_bytes} B + optimizer {optim_bytes} B; "
        f"ratio {size / (param_bytes + optim_bytes):.2f}"
    )
    assert size <= 3 * (param_bytes + optim_bytes)
    base_bytes = (Path(tiny_path) / "model.safetensors").stat().st_size
    assert size < base_bytes  # the frozen base weights are not in it

    # resume after epoch 1 and run epoch 2 == an uninterrupted two-epoch run (same shuffles, same weights)
    resumed, trainer = _fit(tmp_path, tiny_path, max_steps=2 * STEPS_PER_EPOCH, ckpt_path=str(ckpt_file))
    assert trainer.global_step == 2 * STEPS_PER_EPOCH
    straight, _ = _fit(tmp_path / "straight", tiny_path, max_steps=2 * STEPS_PER_EPOCH)
    for (n, a), (_, b) in zip(resumed.trainable_state_dict().items(), straight.trainable_state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=n)


LOAD_SCRIPT = """
import sys, torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from peft import PeftModel
from politician_lm.model.loading import keep_fp32_on_cpu
base, adapter, out = sys.argv[1:4]
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(base, quantization_config=q, dtype=torch.float32, device_map={"": "cpu"})
keep_fp32_on_cpu(model)  # bnb's AVX512-BF16 eval kernel would compute in bf16; training computed in fp32
model = PeftModel.from_pretrained(model, adapter).eval()
ids = torch.load(sys.argv[4])
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, out)
"""


@pytest.mark.slow
def test_exported_adapter_reloads_in_a_fresh_process_with_the_same_logits(tmp_path, tiny_path, tokenizer):
    model, trainer = _fit(tmp_path, tiny_path, max_steps=4)
    last = tmp_path / "run" / "adapters" / "last"
    best = tmp_path / "run" / "adapters" / "best"
    for folder in (last, best):
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert (folder / "tokenizer_config.json").is_file() and (folder / "training_config.yaml").is_file()
    meta = json.loads((last / "politician_lm.json").read_text())
    assert meta["prompt_format"] == "plain" and meta["separator"] == "\n" and meta["global_step"] == 4
    assert not list((tmp_path / "run" / "adapters").glob(".*")), "no temporary folders left behind"

    ids = tokenizer("USER: What about jobs?\nPOLITICIAN: Folks,", return_tensors="pt").input_ids
    torch.save(ids, tmp_path / "ids.pt")
    model.model.eval()
    with torch.no_grad():
        expected = model.model(input_ids=ids).logits
    subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, tiny_path, str(last), str(tmp_path / "out.pt"), str(tmp_path / "ids.pt")],
        check=True,
    )
    got = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    lora_delta = any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert lora_delta, "the adapter must have trained (lora_B moved off zero) for this comparison to mean anything"


def test_compute_dtype_is_fp32_on_cpu_and_bf16_on_a_bf16_gpu():
    from politician_lm.model.loading import resolve_compute_dtype

    assert resolve_compute_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_compute_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert resolve_compute_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_eval_mode_does_not_repack_4bit_weights_on_cpu(tiny_path, tokenizer):
    """bitsandbytes would switch 4-bit layers to a bf16 kernel (without autograd) after an eval pass on
    AVX512-BF16 CPUs; training after validation must still run the fp32 dequantize path."""
    model = build(tiny_path)
    ids = tokenizer("USER: hi\nPOLITICIAN: folks", return_tensors="pt").input_ids
    model.model.eval()
    with torch.no_grad():
        model.model(input_ids=ids)
    layers = [m for m in model.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == N_LINEAR
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    model.model.train()
    loss = model(ids, labels=ids).loss
    loss.backward()
    first = model.model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert first.grad is not None and first.grad.abs().sum() > 0  # gradient flows back through every base layer


@pytest.mark.parametrize("quant", ["nf4", "none"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_path, tokenizer, quant):
    ids = tokenizer("USER: What about jobs?\nPOLITICIAN: Folks, jobs.", return_tensors="pt").input_ids
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build(tiny_path, quantization=quant, gradient_checkpointing=ckpt)
        assert model.model.base_model.model.is_gradient_checkpointing == ckpt
        randomize_lora_b(model, std=0.02)
        model.model.train()
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)


def test_init_adapter_continues_from_an_exported_adapter(tmp_path, tiny_path, tokenizer):
    _fit(tmp_path, tiny_path, max_steps=STEPS_PER_EPOCH)
    folder = tmp_path / "run" / "adapters" / "last"
    start = PoliticianLM(model_name_or_path=tiny_path, init_adapter=str(folder), lora_r=64)
    start.configure_model()
    cfg = start.model.peft_config["default"]
    assert cfg.r == 4 and not cfg.inference_mode  # settings from the adapter, trainable
    assert all(p.requires_grad for n, p in start.named_parameters() if "lora_" in n)
    from politician_lm.inference import load_persona

    ids = tokenizer("USER: hi\nPOLITICIAN: folks", return_tensors="pt").input_ids
    start.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            start.model(input_ids=ids).logits,
            load_persona([str(folder)]).model(input_ids=ids).logits,
            rtol=0,
            atol=1e-5,
        )


def test_init_adapter_must_exist(tmp_path, tiny_path):
    from politician_lm import UserError

    with pytest.raises(UserError, match="adapter folder does not exist"):
        PoliticianLM(model_name_or_path=tiny_path, init_adapter=str(tmp_path / "missing"))


def test_the_whole_model_trains_in_train_mode_so_gradient_checkpointing_is_active(tmp_path, tiny_path):
    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.eval_modules = [n for n, m in pl_module.named_modules() if not m.training]
            base = pl_module.model.base_model.model
            self.checkpointing = base.is_gradient_checkpointing and base.model.training

    L.seed_everything(0)
    probe = Probe()
    model = build(tiny_path, gradient_checkpointing=True)
    trainer = quiet_trainer(
        tmp_path, 1, [probe], num_sanity_val_steps=1, limit_val_batches=1, enable_model_summary=True
    )
    trainer.fit(model, datamodule=_data(tmp_path, tiny_path))
    assert probe.eval_modules == [] and probe.checkpointing


@pytest.mark.parametrize("packing", [False, True])
def test_loss_on_label_positions_equals_the_models_own_loss_and_gradients(tmp_path, tiny_path, packing):
    _, batch = first_train_batch(tmp_path, tiny_path, pc_rows(12), batch_size=4, packing=packing)
    model = build(tiny_path)
    assert model.head_on_labels_only  # Mistral: logits are exactly head(backbone(x))
    randomize_lora_b(model)
    losses, grads = [], []
    for split in (model.scorer.parts, None):  # the head on labelled positions only, then on all
        model.scorer.parts = split
        model.zero_grad()
        loss = model.scorer.token_loss(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-5)
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_models_that_post_process_logits_keep_their_own_loss(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import (
        CohereConfig,
        CohereForCausalLM,
        Gemma2Config,
        Gemma2ForCausalLM,
        MistralConfig,
        MistralForCausalLM,
    )

    from politician_lm.model.scoring import split_head

    small = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
    }
    torch.manual_seed(0)
    for cls, cfg, splits in (
        (MistralForCausalLM, MistralConfig(**small), True),
        (Gemma2ForCausalLM, Gemma2Config(**small, final_logit_softcapping=0.5), False),
        # Gemma 2's own cap (30): a fresh model's small logits pass through it almost unchanged (tanh(x) ~ x), so
        # only the config tells; training through the split head would drop the cap
        (Gemma2ForCausalLM, Gemma2Config(**small), False),
        (CohereForCausalLM, CohereConfig(**small), False),  # logit_scale 0.0625
    ):
        model = get_peft_model(cls(cfg), LoraConfig(r=2, target_modules="all-linear"))
        model.train()
        assert (split_head(model) is not None) == splits, cls.__name__
        assert model.training  # the check puts the model back in train mode


def test_dequantize_for_inference_keeps_logits_and_lora(tiny_path):
    """Generation on CPU de-quantizes the 4-bit weights once: same values, so the same logits, adapter included."""
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model

    from politician_lm.model.loading import dequantize_for_inference, load_base_model
    from tests.helpers import randomize_lora_b

    model = load_base_model(tiny_path, "nf4", torch.float32, torch.device("cpu"))
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    randomize_lora_b(model)
    model.eval()
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with model.disable_adapter():
            base_before = model(input_ids=ids).logits
    dequantize_for_inference(model)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=1e-6)
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=ids).logits, base_before, rtol=0, atol=1e-6)
    assert (before - base_before).abs().max() > 1e-3  # the adapter is still applied on top


def test_dequantized_block_generates_as_generate_does_then_puts_the_4bit_layers_back(tiny_path):
    """The fit-time callbacks generate inside ``dequantized``: the same tokens as ``load_persona``'s de-quantized
    model (what ``generate`` runs), the adapter as trained so far, and afterwards the very same 4-bit layers, so
    training goes on with the weights it had."""
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model

    from politician_lm.model.decoding import generate_new_text
    from politician_lm.model.loading import dequantize_for_inference, dequantized, load_base_model
    from tests.helpers import randomize_lora_b

    def lora(model):
        torch.manual_seed(0)  # the same lora_A in both models
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
        randomize_lora_b(model, std=0.2)
        return model.eval()

    trained = lora(load_base_model(tiny_path, "nf4", torch.float32, torch.device("cpu")))
    reference = lora(dequantize_for_inference(load_base_model(tiny_path, "nf4", torch.float32, torch.device("cpu"))))
    four_bit = {n: m for n, m in trained.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert four_bit
    tok = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 2, "batch_decode": lambda self, x, **k: x.tolist()})()
    ids, mask = torch.tensor([[5, 50, 60, 70], [5, 51, 61, 71]]), torch.ones(2, 4, dtype=torch.long)
    with torch.no_grad():
        with dequantized(trained) as model:
            assert model is trained and not any(isinstance(m, bnb.nn.Linear4bit) for m in trained.modules())
            got = generate_new_text(trained, tok, ids, mask, max_new_tokens=12, do_sample=False)
        want = generate_new_text(reference, tok, ids, mask, max_new_tokens=12, do_sample=False)
        with reference.disable_adapter():
            base = generate_new_text(reference, tok, ids, mask, max_new_tokens=12, do_sample=False)
    assert got == want and got != base  # the adapter as trained is applied
    assert {n: m for n, m in trained.named_modules() if isinstance(m, bnb.nn.Linear4bit)} == four_bit  # same objects
    with pytest.raises(RuntimeError), dequantized(trained):
        raise RuntimeError("a failure inside the block")
    assert {n: m for n, m in trained.named_modules() if isinstance(m, bnb.nn.Linear4bit)} == four_bit


def test_dequantizing_draws_nothing_from_the_rng(tiny_path):
    """A resumed fit replays the RNG from its checkpoint: generating inside ``dequantized`` during fit (the
    callbacks) must not draw from it (a plain ``nn.Linear`` would, for its random initial weight)."""
    import torch

    from politician_lm.model.loading import dequantize_for_inference, dequantized, load_base_model

    model = load_base_model(tiny_path, "nf4", torch.float32, torch.device("cpu"))
    state = torch.get_rng_state()
    with dequantized(model):
        pass
    dequantize_for_inference(model)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_python_api_fit_shows_no_library_deprecation_noise(tmp_path, tiny_path):
    """A fit from Python, not the CLI, with gradient checkpointing: transformers' ``is_gradient_checkpointing``
    FutureWarning (raised by PEFT's calls, nothing a user can change) must not reach the user."""
    import warnings

    from tests.helpers import fit_adapter, pc_rows

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        fit_adapter(tmp_path, tiny_path, pc_rows(8), max_steps=1, gradient_checkpointing=True)
    noisy = [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert noisy == []


@pytest.mark.slow
def test_cpu_fit_returns_the_freed_heap_before_every_step(tmp_path, tiny_path, monkeypatch):
    """Under glibc without tcmalloc the heap's freed pages go back to the system before each optimizer step
    (``allocator.release_freed_heap``, which does nothing elsewhere): one call per training step."""
    from politician_lm.model import module
    from tests.helpers import fit_adapter

    calls = []
    monkeypatch.setattr(module, "release_freed_heap", lambda: calls.append(1) or True)
    fit_adapter(tmp_path, tiny_path, pc_rows(8), max_steps=3)
    assert len(calls) == 3


@pytest.mark.slow
def test_a_fit_that_never_validates_says_there_is_no_best_adapter(tmp_path, tiny_path, caplog):
    """--trainer.max_steps before the first validation wrote adapters/last only, and nothing said why best was not."""
    from tests.helpers import fit_adapter

    with caplog.at_level("WARNING"):
        fit_adapter(tmp_path / "quiet", tiny_path, pc_rows(8), max_steps=1)  # validates nothing
    assert not (tmp_path / "quiet" / "adapters" / "best").exists()
    assert "no validation logged val_loss before fit ended" in caplog.text and "use adapters/last" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _fit(tmp_path / "validated", tiny_path, max_steps=2)
    assert (tmp_path / "validated" / "run" / "adapters" / "best").is_dir() and "no validation logged" not in caplog.text
