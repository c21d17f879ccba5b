"""What ``PoliticianLM`` trains and how: the base loaded (quantized) on its device, made ready for k-bit training and
gradient checkpointing, with a trainable LoRA adapter (a new one, or ``init_adapter`` to keep training); and the
optimizer with its learning-rate schedule."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import get_scheduler

from politician_lm.errors import UserError
from politician_lm.model.adapters import attach_adapter
from politician_lm.model.fused_lora import fuse_lora_layers
from politician_lm.model.grouped_attention import group_cpu_attention
from politician_lm.model.loading import load_base_model, model_skeleton
from politician_lm.model.lora_dropout import lean_lora_dropout
from politician_lm.model.lora_inputs import share_lora_inputs
from politician_lm.model.recompute import recompute_norm_outputs
from politician_lm.model.shared_mask import share_cpu_attention_mask
from politician_lm.model.swiglu import fuse_gated_mlps
from politician_lm.quiet import quiet_libraries


def build_trainable_model(
    model_name_or_path: str,
    quantization: str,
    dtype: torch.dtype,
    device: torch.device,
    *,
    quant_storage: str,
    trust_remote_code: bool,
    attn_implementation: str | None,
    gradient_checkpointing: bool,
    adapter: str | LoraConfig,
) -> Any:
    """The PEFT-wrapped model in train mode; ``adapter`` is a PEFT adapter folder to keep training, or the
    settings of a new adapter."""
    model = load_base_model(
        model_name_or_path,
        quantization,
        dtype,
        device,
        trust_remote_code,
        attn_implementation,
        quant_storage=quant_storage,
    )
    # Not PEFT's prepare_model_for_kbit_training: it casts every weight that is not 4-bit (embeddings, head, norms)
    # to fp32, and an fp32 norm weight turns the residual stream and every saved activation fp32 under bf16
    # autocast. On an H200 (7B shapes) that cost 1.5x TRL's peak memory at 0.74x its tokens/s (docs/performance.md).
    # The base keeps the compute dtype it was loaded in; the LoRA weights stay fp32 (PEFT's default), the matmuls
    # run in the compute dtype. On CPU the compute dtype is fp32, so nothing changes there. PEFT freezes the base.
    # two [tokens, intermediate] and two [tokens, hidden] tensors a layer fewer kept for backward, the same numbers
    # (gradient checkpointing keeps none, and its own hooks must see every save)
    fuse_gated_mlps(model, recompute_product=not gradient_checkpointing)
    if not gradient_checkpointing:  # its recomputation runs outside the forward passes these hooks act in
        recompute_norm_outputs(model)
        group_cpu_attention(model, device)  # on CPU, SDPA keeps grouped keys and values, not repeated copies
        share_cpu_attention_mask(model, device)  # on CPU, SDPA keeps one float mask, not one per layer
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if isinstance(adapter, LoraConfig):
        model = _with_lora(model, adapter)
    else:
        model = attach_adapter(model, adapter, is_trainable=True)
    share_lora_inputs(model)  # under autocast, no per-layer copy of each LoRA layer's input kept for backward
    if not gradient_checkpointing:
        lean_lora_dropout(model)  # a LoRA dropout keeps a boolean mask, not a dropped copy and a float mask
    fuse_lora_layers(model)  # fp32 without autocast: each LoRA update added by one addmm, not three temporaries
    # from_pretrained returns the base in eval mode and Lightning keeps module modes as it finds them; in eval
    # mode transformers silently skips gradient checkpointing, so the whole model goes to train mode here.
    model.train()
    return model


def _with_lora(model: Any, adapter: LoraConfig) -> Any:
    """``get_peft_model``, with PEFT's refusal of these settings for this model (no module matches
    ``target_modules``; a dropout that MoE expert weights take not) as one line naming the keys to change."""
    try:
        return get_peft_model(model, adapter)
    except ValueError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(
            f"model.target_modules / model.lora_*: PEFT cannot put LoRA on {type(model).__name__} with these "
            f"settings ({first})"
        ) from None


def check_lora_settings(base: str, adapter: LoraConfig, trust_remote_code: bool) -> None:
    """``_with_lora``'s refusal now, on ``base``'s skeleton on the meta device (built from its config: no weights
    load), before the trainer starts. A hub id is left to the load, which reads it anyway."""
    if not (Path(base) / "config.json").is_file():
        return
    quiet_libraries()  # PEFT's calls raise transformers' deprecation noise, which a fit never shows
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # draws nothing from a seeded run's generator
        _with_lora(model_skeleton(base, trust_remote_code), copy.deepcopy(adapter))  # PEFT fills in its config


def lora_config(hp: Mapping[str, Any]) -> LoraConfig:
    """The PEFT settings of a new adapter from ``PoliticianLM``'s ``lora_*``, ``target_modules``, ``use_dora`` and
    ``use_rslora`` hyperparameters."""
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        target_modules=hp["target_modules"],
        use_dora=hp["use_dora"],
        use_rslora=hp["use_rslora"],
    )


def optimizer_and_schedule(
    optimizer: torch.optim.Optimizer, scheduler: str, warmup_ratio: float, total_steps: int
) -> dict[str, Any]:
    """Lightning's optimizer configuration: ``scheduler`` (``transformers.get_scheduler``) after linear warmup over
    ``warmup_ratio`` of the ``total_steps`` optimizer steps, stepped every optimizer step."""
    schedule = get_scheduler(
        scheduler,
        optimizer,
        num_warmup_steps=int(warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
