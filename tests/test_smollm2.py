"""SmolLM2-135M-Instruct, the real model: chat-template masking token by token, and a short QLoRA fit whose adapter
reloads in a fresh process with plain transformers + PEFT and gives the in-training logits."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import pytest

from politician_lm.batch import IGNORE_INDEX
from politician_lm.data.templates import PromptStyle
from politician_lm.data.tokenize import encode
from tests.helpers import ROOT, pc_rows, quiet_trainer, write_jsonl

pytestmark = pytest.mark.slow
PERSONA = "You are Joe Biden. Answer in his voice."


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.mark.parametrize(
    "messages",
    [
        [
            {"role": "user", "content": "USER: Who are you?"},
            {"role": "assistant", "content": "POLITICIAN: I'm Joe Biden."},
        ],
        [
            {"role": "user", "content": "What about jobs?"},
            {"role": "assistant", "content": "Folks, jobs are up."},
            {"role": "user", "content": "And prices?"},
            {"role": "assistant", "content": "Look, prices are still too high."},
        ],
    ],
)
def test_chatml_masking_is_exact_and_the_persona_replaces_smollm_default(smol_tokenizer, messages):
    tok = smol_tokenizer
    prompt, completion = PromptStyle("chat", system_prompt=PERSONA).render(messages, tok)
    assert "SmolLM" not in prompt and prompt.count(PERSONA) == 1
    out = encode(tok, prompt, completion, max_length=512)
    # Independent reference: the template's own token ids for the context and for the whole conversation.
    clean = [{"role": "system", "content": PERSONA}] + [
        {"role": m["role"], "content": m["content"].removeprefix("USER: ").removeprefix("POLITICIAN: ")}
        for m in messages
    ]
    ref_prompt = tok.apply_chat_template(clean[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    ref_full = tok.apply_chat_template(clean, tokenize=True, return_dict=False)
    while ref_full[-1] != tok.eos_token_id:  # the template writes "<|im_end|>\n": the answer ends at <|im_end|>
        ref_full = ref_full[:-1]
    assert out["input_ids"] == ref_full
    assert out["labels"] == [IGNORE_INDEX] * len(ref_prompt) + ref_full[len(ref_prompt) :]
    assert out["input_ids"].count(tok.eos_token_id) == len([m for m in clean if True])  # one <|im_end|> per turn
    assert tok.decode([i for i in out["labels"] if i != IGNORE_INDEX]) == clean[-1]["content"] + tok.eos_token


def test_without_a_persona_the_template_keeps_its_own_system_prompt(smol_tokenizer):
    prompt, _ = PromptStyle("chat").render(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], smol_tokenizer
    )
    assert "You are a helpful AI assistant named SmolLM" in prompt


def test_fit_then_fresh_process_reload_matches_logits(smollm2_path, tmp_path):
    import lightning.pytorch as L
    import torch

    from politician_lm import AdapterExport, PoliticianDataModule, PoliticianLM

    L.seed_everything(0)
    write_jsonl(tmp_path / "data" / "train.jsonl", pc_rows(8))
    write_jsonl(tmp_path / "data" / "val.jsonl", pc_rows(2))
    dm = PoliticianDataModule(
        data_path=str(tmp_path / "data"),
        tokenizer=smollm2_path,
        batch_size=4,
        max_length=192,
        prompt_format="chat",
        politician="biden",
        profiles_dir=str(ROOT / "data" / "profiles"),
        cache_dir=str(tmp_path / "cache"),
    )
    model = PoliticianLM(
        model_name_or_path=smollm2_path,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    quiet_trainer(tmp_path, 2, [AdapterExport()]).fit(model, datamodule=dm)
    adapter = tmp_path / "adapters" / "last"
    meta = json.loads((adapter / "politician_lm.json").read_text())
    assert meta["prompt_format"] == "chat" and "Joe Biden" in meta["system_prompt"]
    ids = dm.tokenizer("Folks, here's the deal on jobs.", return_tensors="pt").input_ids
    model.model.eval()
    with torch.no_grad():
        trained = model.model(input_ids=ids).logits
    assert trained.abs().max() > 0
    torch.save({"ids": ids, "logits": trained}, tmp_path / "expected.pt")
    script = f"""
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.float32)
base = AutoModelForCausalLM.from_pretrained({smollm2_path!r}, quantization_config=q, dtype=torch.float32,
                                            device_map={{"": "cpu"}})
for m in base.modules():
    if hasattr(m, "support_avx512bf16_for_cpu"):
        m.support_avx512bf16_for_cpu = False
model = PeftModel.from_pretrained(base, {str(adapter)!r}).eval()
expected = torch.load({str(tmp_path / "expected.pt")!r})
with torch.no_grad():
    got = model(input_ids=expected["ids"]).logits
torch.testing.assert_close(got, expected["logits"], rtol=0, atol=1e-4)
with model.disable_adapter(), torch.no_grad():
    assert (model(input_ids=expected["ids"]).logits - expected["logits"]).abs().max() > 1e-3  # the adapter matters
print("MATCH")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert "MATCH" in result.stdout, result.stderr[-3000:]
