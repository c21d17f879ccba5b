"""Check on a device that the lean LoRA dropout (politician_lm/model/lora_dropout.py) is PEFT's, bit for bit.

    python scripts/check_lora_dropout.py                  # CUDA if there is one, else CPU
    python scripts/check_lora_dropout.py --device cpu     # what CI runs

A random 2-layer Llama (no download) with LoRA on every linear layer, dropout 0.1, one training step from one seed,
twice: with PEFT's own dropout and with ``lean_lora_dropout``. The loss, every LoRA gradient and the RNG state after
the step must be equal (``torch.equal``), in fp32 and under bf16 autocast (where the device has bf16). Prints which
substitutions the lean dropout took (each is checked once against the tensor it replaces and skipped where it
would differ) and, on CUDA, the peak memory of both. Exits 1 on any difference. The tests cover the CPU; this is
the step ``scripts/device_checks.sh`` runs on a lent GPU, where ATen's dropout is a different, fused kernel.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from politician_lm.model import lora_dropout


def step(model, ids: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, dict, list, float]:
    """(loss, LoRA gradients, RNG states after, peak CUDA memory in MiB) of one step from a fixed seed."""
    device = ids.device
    torch.manual_seed(7)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    rng = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return loss.detach(), grads, rng, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", type=int, default=512, help="tokens a row (4 rows)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max(args.tokens, 64),
    )  # fmt: skip
    base = LlamaForCausalLM(config).to(device)
    ids = torch.randint(0, config.vocab_size, (4, args.tokens), generator=torch.Generator().manual_seed(1)).to(device)
    autocasts = [False] + ([True] if device.type == "cpu" or torch.cuda.is_bf16_supported() else [])
    failed = False
    for autocast in autocasts:
        results = {}
        for lean in (False, True):
            torch.manual_seed(3)
            model = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_dropout=0.1, target_modules="all-linear"))
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.data.normal_(std=0.02)
            changed = lora_dropout.lean_lora_dropout(model) if lean else 0
            model.train()
            results[lean] = (*step(model, ids, autocast), changed)
        (loss, grads, rng, peak, _), (lean_loss, lean_grads, lean_rng, lean_peak, changed) = (
            results[False],
            results[True],
        )
        same = (
            torch.equal(loss, lean_loss)
            and grads.keys() == lean_grads.keys()
            and all(torch.equal(grads[n], lean_grads[n]) for n in grads)
            and all(torch.equal(a, b) for a, b in zip(rng, lean_rng))
        )
        failed |= not same
        label = "bf16 autocast" if autocast else "fp32"
        print(
            f"{device.type} {label}: {changed} adapters lean; loss {float(loss):.6f}; "
            f"{'bit-identical' if same else 'DIFFERENT'} loss, {len(grads)} gradients and RNG; "
            f"peak MiB PEFT {peak:.1f}, lean {lean_peak:.1f}"
        )
    taken = {key: ok for key, ok in lora_dropout._EXACT.items() if key[1] == device.type}
    print("substitutions checked (kind, device, dtype, input dtype, autocast) -> exact:", taken)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
