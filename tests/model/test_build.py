"""What ``build_trainable_model`` hands to training: a frozen 4-bit base in its compute dtype, fp32 LoRA weights."""

from __future__ import annotations

import torch
from bitsandbytes.nn import Params4bit
from peft import LoraConfig

from politician_lm.model.build import build_trainable_model
from tests.helpers import TINY


def test_the_k_bit_base_keeps_its_compute_dtype_and_only_lora_trains():
    # PEFT's prepare_model_for_kbit_training would make the embeddings, head and norms fp32: under bf16 autocast
    # that made every saved activation fp32 (1.49x TRL's peak memory on a 7B model on an H200).
    model = build_trainable_model(
        str(TINY),
        "nf4",
        torch.bfloat16,
        torch.device("cpu"),
        quant_storage="uint8",
        trust_remote_code=False,
        attn_implementation="sdpa",
        gradient_checkpointing=False,
        adapter=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    params = dict(model.named_parameters())
    lora = {n: p for n, p in params.items() if "lora_" in n}
    base = {n: p for n, p in params.items() if "lora_" not in n and not isinstance(p, Params4bit)}
    assert lora and all(p.requires_grad and p.dtype == torch.float32 for p in lora.values())
    assert any("norm" in n for n in base) and any("embed" in n for n in base)
    assert {n: p.dtype for n, p in base.items() if p.dtype != torch.bfloat16} == {}
    assert not any(p.requires_grad for p in base.values())
    # and it trains: a bf16 autocast step reaches the LoRA weights only
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    assert all(p.grad is None for p in base.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
