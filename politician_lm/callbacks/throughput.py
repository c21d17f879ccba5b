"""``ThroughputMonitor``: real tokens/s, padding fraction, peak memory and MFU during fit.

FLOP convention (per real, non-pad token, forward + backward): the frozen base body costs 4·N_base (forward 2·N,
backward to the activations 2·N, no weight gradients), the trainable LoRA weights 6·N_lora, and causal attention
6·L·d·T (scores and weighted sum: 2·L·d·T forward, twice that backward, T = mean sequence length). N_base leaves out
the input embedding (a lookup) and the output head, which costs 4·N_head per token it runs on: every token, or only
the completion tokens when the module computes the loss on those alone (``PoliticianLM._loss``). MFU divides the
achieved FLOP/s by a peak: ``peak_tflops`` if given, else a matmul measured on the same device at fit start.

Token counts are summed on the device and read, with one synchronisation, only when a window of
``every_n_steps`` batches is logged; the window's time runs from its first batch's start to its last batch's end,
so it includes data loading and everything else a step waits for, except validation.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning.pytorch as L
import torch

from politician_lm.batch import IGNORE_INDEX


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
        self.real: Any = 0  # int or device tensor: summed without reading the device
        self.sequences: Any = 0
        self.head_tokens: Any = 0
        self.total = self.batches = 0
        self.seconds = 0.0
        self._t0: float | None = None  # start of the running stretch of training batches

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        frozen, self.trainable = count_params(pl_module)
        base = pl_module.model.get_base_model()
        embed, head = base.get_input_embeddings(), base.get_output_embeddings()
        self.head = head.weight.numel() if head is not None else 0
        self.embed = embed.weight.numel() if embed is not None and (head is None or embed.weight is not head.weight) else 0
        self.frozen = frozen - self.embed - self.head
        self.head_on_labels = getattr(pl_module, "_split", None) is not None
        cfg = pl_module.model.config
        self.layers, self.hidden = cfg.num_hidden_layers, cfg.hidden_size
        device = pl_module.device
        dtype = getattr(pl_module, "compute_dtype", torch.float32)
        self.peak = self.peak_tflops * 1e12 if self.peak_tflops else measure_peak_flops(device, dtype)

    def _sync(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._t0 is None:
            self._t0 = self._sync(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch.get("labels")
        if "real_tokens" in batch:  # packed rows say how many tokens are real
            real, sequences = batch["real_tokens"], batch["sequences"]
        else:
            real, sequences = (mask.sum() if mask is not None else ids.numel()), ids.shape[0]
        self.real = self.real + real
        self.sequences = self.sequences + sequences
        self.head_tokens = self.head_tokens + ((labels != IGNORE_INDEX).sum() if self.head_on_labels and labels is not None
                                               else real)
        self.total += ids.numel()
        self.batches += 1
        if self.batches % self.every_n_steps == 0:
            self._log(trainer, self.seconds + self._sync(pl_module) - self._t0)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is not None:  # validation inside a window does not count as training time
            self.seconds += self._sync(pl_module) - self._t0
            self._t0 = None

    def _log(self, trainer: L.Trainer, seconds: float) -> None:
        real, sequences, head_tokens = int(self.real), int(self.sequences), int(self.head_tokens)  # read once a window
        if seconds <= 0 or not real:
            return
        mean_len = real / max(1, sequences)
        body = 4 * self.frozen + 6 * self.trainable + 6 * self.layers * self.hidden * mean_len
        flops = body * real + 4 * self.head * head_tokens
        if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(trainer.strategy.root_device) / 2**20
        else:  # ru_maxrss: KB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
        metrics = {"perf/tokens_per_s": real / seconds, "perf/padding_fraction": 1 - real / self.total,
                   "perf/peak_memory_mb": peak_mb, "perf/mfu": flops / seconds / self.peak}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self.last = metrics
        self._reset()
