"""Load a Hugging Face causal LM (optionally bitsandbytes-quantized) and wrap it with PEFT LoRA.

The tiny test model and a 7B hub model take exactly the same path: ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from politician_lm.model.packed_linear import packed

log = logging.getLogger(__name__)

SAMPLING_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty")

Quantization = Literal["nf4", "fp4", "int8", "none"]
ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]
QuantStorage = Literal["uint8", "bfloat16", "float16", "float32"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]  # README's model.attn_implementation


def resolve_compute_dtype(name: ComputeDtype, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU: without AMX bf16 products are 4-7x
    slower than fp32, and with it a QLoRA step gains 1.1-1.2x while the numbers change (scripts/bench_cpu_bf16.py)."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(
    quantization: Quantization, compute_dtype: torch.dtype, quant_storage: QuantStorage = "uint8"
) -> BitsAndBytesConfig | None:
    """nf4 is QLoRA: 4-bit NormalFloat with double quantization of the scales."""
    if quantization == "none":
        return None
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=getattr(torch, quant_storage),
    )


def load_base_model(
    model_name_or_path: str,
    quantization: Quantization,
    compute_dtype: torch.dtype,
    device: torch.device,
    trust_remote_code: bool = False,
    attn_implementation: AttnImplementation | None = "sdpa",
    allow_pickle: bool = False,
    quant_storage: QuantStorage = "uint8",
) -> Any:
    """Load the frozen base model onto ``device``, quantized when asked; safetensors only unless ``allow_pickle``."""
    kwargs: dict[str, Any] = dict(
        dtype=compute_dtype,
        trust_remote_code=trust_remote_code,
        use_safetensors=None if allow_pickle else True,
        device_map={"": device},
    )
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    qconfig = quantization_config(quantization, compute_dtype, quant_storage)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    try:
        model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
    except ValueError as e:  # raised before any weight loads
        if attn_implementation != "sdpa" or "scaled_dot_product_attention" not in str(e):
            raise
        # an architecture without SDPA (BLOOM, say): eager, as transformers itself would choose
        log.warning("%s: no SDPA attention for this architecture; using eager attention", model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **{**kwargs, "attn_implementation": "eager"})
    model.config.use_cache = False  # training never uses the KV cache
    if device.type == "cpu":
        keep_fp32_on_cpu(model)
    return model


def keep_fp32_on_cpu(model: Any) -> Any:
    """Turn off bitsandbytes' CPU inference kernel for 4-bit layers.

    On CPUs with AVX512-BF16, ``Linear4bit`` repacks its weight in eval mode (no grad) and multiplies in bf16,
    so validation and generation would not compute what training computes, and a reloaded adapter would not
    reproduce the in-training logits. With the flag off every 4-bit matmul dequantizes to the compute dtype.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def dequantize_for_inference(model: Any) -> Any:
    """Replace every bitsandbytes 4-bit layer with a plain ``nn.Linear`` holding its de-quantized weight.

    The values are exactly those the 4-bit layer de-quantizes on every call (``dequantize_4bit`` with the layer's own
    quant state, cast to the compute dtype), so outputs are unchanged; generation just stops paying that
    de-quantization for each new token, which on CPU costs more than the matmul. Weights take 4x the NF4 memory in
    fp32, so use it for inference on CPU, never during training. LoRA layers keep working: PEFT calls ``base_layer``.
    """
    for parent, name, child in _four_bit_layers(model):
        setattr(parent, name, _dequantized_linear(child))
    return model


@contextmanager
def dequantized(model: Any) -> Iterator[Any]:
    """``model`` with its 4-bit layers de-quantized (``dequantize_for_inference``) for the ``with`` block only, then
    the 4-bit layers put back: how the fit-time callbacks generate on CPU with the adapter as it is being trained.
    The frozen float32 layers (the de-quantized ones, the output head) multiply through oneDNN in the block
    (``packed_linear``), as in ``load_persona``.

    A no-op off CPU (there the 4-bit kernels are the fast path and a de-quantized copy would cost GPU memory) and
    for models without 4-bit layers. The frozen base is de-quantized once per block, not at every generated token.
    """
    layers = [
        (parent, name, child) for parent, name, child in _four_bit_layers(model) if child.weight.device.type == "cpu"
    ]
    try:
        for parent, name, child in layers:
            setattr(parent, name, _dequantized_linear(child))
        with packed(model):  # the frozen layers packed for oneDNN, as ``load_persona`` packs them
            yield model
    finally:
        for parent, name, child in layers:
            setattr(parent, name, child)


@contextmanager
def adapter_state(model: Any, folder: Path | None) -> Iterator[Any]:
    """The PEFT ``model``'s active adapter holds the weights saved in ``folder`` (an adapter folder of the same
    shapes) inside the block, and its own again after it; ``None``: unchanged."""
    if folder is None:
        yield model
        return
    from peft import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    own = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    set_peft_model_state_dict(model, load_peft_weights(str(folder), device="cpu"))
    try:
        yield model
    finally:
        set_peft_model_state_dict(model, own)


def model_skeleton(base: str, trust_remote_code: bool = False) -> Any:
    """``base``'s modules with their weights on the meta device, built from its config alone: no weight is read or
    allocated."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    with init_empty_weights():
        config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def empty_model(base: str) -> Any:
    """``base``'s modules in fp32 with uninitialised weights, built from its config alone: enough to attach, combine
    and save LoRA adapters (which read only their own tensors); a 7B base costs address space, not RAM."""
    return model_skeleton(base).to_empty(device="cpu").to(torch.float32)


def _four_bit_layers(model: Any) -> list[tuple[torch.nn.Module, str, Any]]:
    """``(parent, attribute, layer)`` of every bitsandbytes 4-bit linear layer in ``model``."""
    import bitsandbytes as bnb

    return [
        (parent, name, child)
        for parent in list(model.modules())
        for name, child in list(parent.named_children())
        if isinstance(child, bnb.nn.Linear4bit)
    ]


def _dequantized_linear(child: Any) -> torch.nn.Linear:
    """A plain ``nn.Linear`` with the weight ``child`` (a 4-bit layer) de-quantizes on every call, in its compute
    dtype; frozen, like the layer it stands in for."""
    import bitsandbytes as bnb

    dtype = child.compute_dtype or torch.float32
    weight = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype)
    # skip_init: no random initial weight, so de-quantizing draws nothing from the RNG a resumed fit must replay
    linear = torch.nn.utils.skip_init(
        torch.nn.Linear,
        child.in_features,
        child.out_features,
        bias=child.bias is not None,
        device=weight.device,
        dtype=dtype,
    )
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    if child.bias is not None:
        linear.bias = torch.nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
    return linear


def generation_defaults(folder: Path) -> dict[str, Any]:
    """The sampling settings saved in ``folder``'s ``generation_config.json`` (those ``generate`` accepts)."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    cfg = json.loads(path.read_text(encoding="utf-8"))
    return {k: cfg[k] for k in SAMPLING_KEYS if cfg.get(k) is not None}


def load_tokenizer(source: Path, base: str) -> Any:
    """The tokenizer saved in ``source`` (the first adapter's folder, or an exported model), else the base model's;
    its pad token is EOS where it has none. ``serve`` uses the first persona's for every persona."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source) if (source / "tokenizer_config.json").is_file() else base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
