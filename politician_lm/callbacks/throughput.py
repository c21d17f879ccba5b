"""``ThroughputMonitor``: real tokens/s, padding fraction, peak memory and MFU during fit.

FLOP convention (per real, non-pad token, forward + backward): a frozen base costs 4·N_base (forward 2·N, backward
to the activations 2·N, no weight gradients), the trainable LoRA weights 6·N_lora, and causal attention
6·L·d·T (scores and weighted sum: 2·L·d·T forward, twice that backward, T = mean sequence length). MFU divides the
achieved FLOP/s by a peak: ``peak_tflops`` if given, else a matmul measured on the same device at fit start.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning.pytorch as L
import torch


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(frozen, trainable) parameter counts; packed 4-bit weights count as their unpacked size."""
    frozen = trainable = 0
    for p in module.parameters():
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        n = int(torch.Size(shape).numel()) if shape is not None else p.numel()
        if p.requires_grad:
            trainable += n
        else:
            frozen += n
    return frozen, trainable


def measure_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


class ThroughputMonitor(L.Callback):
    """Logs ``perf/tokens_per_s``, ``perf/padding_fraction``, ``perf/peak_memory_mb`` and ``perf/mfu``."""

    def __init__(self, every_n_steps: int = 10, peak_tflops: float | None = None) -> None:
        """
        Args:
            every_n_steps: Log the numbers of the last N training batches.
            peak_tflops: Device peak for MFU (e.g. 989 for an H100 in bf16); None measures a matmul at fit start.
        """
        self.every_n_steps, self.peak_tflops = every_n_steps, peak_tflops
        self._reset()

    def _reset(self) -> None:
        self.real = self.total = self.seq_tokens = self.sequences = 0
        self.seconds = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.frozen, self.trainable = count_params(pl_module)
        cfg = pl_module.model.config
        self.layers, self.hidden = cfg.num_hidden_layers, cfg.hidden_size
        device = pl_module.device
        dtype = getattr(pl_module, "compute_dtype", torch.float32)
        self.peak = self.peak_tflops * 1e12 if self.peak_tflops else measure_peak_flops(device, dtype)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.seconds += time.perf_counter() - self._t0
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        if "real_tokens" in batch:  # packed rows say how many tokens are real
            real, sequences = int(batch["real_tokens"]), int(batch["sequences"])
        else:
            real, sequences = (int(mask.sum()) if mask is not None else ids.numel()), ids.shape[0]
        self.real += real
        self.total += ids.numel()
        self.sequences += sequences
        if (batch_idx + 1) % self.every_n_steps == 0:
            self._log(trainer)

    def _log(self, trainer: L.Trainer) -> None:
        if not self.seconds or not self.real:
            return
        tokens_per_s = self.real / self.seconds
        mean_len = self.real / max(1, self.sequences)
        flops_per_token = 4 * self.frozen + 6 * self.trainable + 6 * self.layers * self.hidden * mean_len
        if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(trainer.strategy.root_device) / 2**20
        else:  # ru_maxrss: KB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
        metrics = {"perf/tokens_per_s": tokens_per_s, "perf/padding_fraction": 1 - self.real / self.total,
                   "perf/peak_memory_mb": peak_mb, "perf/mfu": flops_per_token * tokens_per_s / self.peak}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self.last = metrics
        self._reset()
