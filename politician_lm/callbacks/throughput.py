"""``QLoRAThroughput``: real tokens/s, padding fraction, peak memory and MFU of a QLoRA fit.

FLOP convention (per real, non-pad token, forward + backward): the frozen base body costs 4·N_base (forward 2·N,
backward to the activations 2·N, no weight gradients), the trainable LoRA weights 6·N_lora, and causal attention
6·L·d·T (scores and weighted sum: 2·L·d·T forward, twice that backward, T = mean sequence length). N_base leaves out
the input embedding (a lookup) and the output head, which costs 4·N_head per token it runs on: every token, or only
the completion tokens when the module says ``head_on_labels_only`` (``model.scoring.Scorer``). ``QLoRAFlops`` holds
these counts; Lightning's generic ``measure_flops`` would count the weight gradients a frozen base never computes.

Rates come from Lightning's ``Throughput`` (``lightning.fabric.utilities.throughput``), given the window's real
tokens as ``lengths`` and its FLOPs as ``flops``. MFU divides the achieved FLOP/s by a device peak: ``peak_tflops``
if given, else Lightning's datasheet figure for the device and compute dtype (``get_available_flops``: the GPUs and
TPUs it lists), else the best FLOP/s of matmuls of the model's own linear-layer shapes measured on the device at fit
start (CPUs, GPUs Lightning does not list).

Token counts are summed on the device and read, with one synchronisation, only when a window of ``every_n_steps``
batches is logged; the window's time runs from its first batch's start to its last batch's end, so it includes data
loading and everything else a step waits for, except validation.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops

from politician_lm.batch import IGNORE_INDEX
from politician_lm.callbacks.contracts import ThroughputModule, require


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


@dataclass(frozen=True)
class QLoRAFlops:
    """The parameter counts of the FLOP convention above."""

    frozen: int  # frozen base weights without the input embedding and the output head
    trainable: int
    embed: int  # input embedding (0 when tied to the head)
    head: int
    layers: int
    hidden: int
    head_on_labels_only: bool

    @classmethod
    def of(cls, module: ThroughputModule) -> QLoRAFlops:
        frozen, trainable = count_params(module)  # type: ignore[arg-type]
        base = module.model.get_base_model()
        embed, head = base.get_input_embeddings(), base.get_output_embeddings()
        n_head = head.weight.numel() if head is not None else 0
        n_embed = embed.weight.numel() if embed is not None and (head is None or embed.weight is not head.weight) else 0
        cfg = module.model.config
        return cls(
            frozen - n_embed - n_head,
            trainable,
            n_embed,
            n_head,
            cfg.num_hidden_layers,
            cfg.hidden_size,
            module.head_on_labels_only,
        )

    def flops(self, real: int, sequences: int, head_tokens: int) -> float:
        """Forward + backward FLOPs of ``real`` tokens in ``sequences`` sequences, the head run on ``head_tokens``."""
        mean_len = real / max(1, sequences)
        body = 4 * self.frozen + 6 * self.trainable + 6 * self.layers * self.hidden * mean_len
        return body * real + 4 * self.head * head_tokens


def linear_shapes(model: torch.nn.Module, top: int = 3) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of the frozen linear layers (4-bit ones included) that hold the most weights."""
    weights: Counter[tuple[int, int]] = Counter()
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad:
            weights[(m.in_features, m.out_features)] += m.in_features * m.out_features
    return [shape for shape, _ in weights.most_common(top)]


def measure_peak_flops(
    device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int]], rows: int = 1024, repeats: int = 5
) -> float:
    """The best FLOP/s of ``[rows, in] @ [in, out]`` matmuls over ``shapes``, timed on ``device`` in ``dtype``."""
    best = 0.0
    for k, n in shapes or [(1024, 1024)]:
        a = torch.randn(rows, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        a @ b  # warm up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * rows * k * n * repeats / (time.perf_counter() - start))
    return best


def device_peak_flops(module: ThroughputModule, device: torch.device, peak_tflops: float | None = None) -> float:
    """``peak_tflops``, else Lightning's figure for ``device`` in the module's compute dtype, else a measured one."""
    if peak_tflops:
        return peak_tflops * 1e12
    dtype = module.compute_dtype or torch.float32
    return float(get_available_flops(device, dtype) or measure_peak_flops(device, dtype, linear_shapes(module.model)))


class QLoRAThroughput(L.Callback):
    """Logs ``perf/tokens_per_s``, ``perf/padding_fraction``, ``perf/peak_memory_mb`` and ``perf/mfu``."""

    def __init__(self, every_n_steps: int = 10, peak_tflops: float | None = None) -> None:
        """
        Args:
            every_n_steps: Log the numbers of the last N training batches.
            peak_tflops: Device peak for MFU (e.g. 989 for an H100 SXM in bf16); None takes Lightning's figure for
                the device, or measures matmuls of the model's layer shapes at fit start where Lightning has none.
        """
        self.every_n_steps, self.peak_tflops = every_n_steps, peak_tflops
        self._reset_window()

    def _reset_window(self) -> None:
        self.real: Any = 0  # int or device tensor: summed without reading the device
        self.sequences: Any = 0
        self.head_tokens: Any = 0
        self.total = self.batches = 0
        self.seconds = 0.0
        self._t0: float | None = None  # start of the running stretch of training batches

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            require(pl_module, ThroughputModule, type(self).__name__, "LightningModule")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.counts = QLoRAFlops.of(pl_module)  # type: ignore[arg-type]
        peak = device_peak_flops(pl_module, pl_module.device, self.peak_tflops)  # type: ignore[arg-type]
        # a window of two updates: the rates of the stretch between the previous log and this one
        self.throughput = Throughput(available_flops=peak, world_size=trainer.world_size, window_size=2)
        self.throughput.update(time=0.0, batches=0, samples=0, lengths=0, flops=0)
        self._time = 0.0  # training seconds logged so far, and their batches, sequences and real tokens
        self._batches = self._sequences = self._real = 0
        self._reset_window()

    def _sync(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._t0 is None:
            self._t0 = self._sync(pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for part in batch.values() if "pairs" in batch else [batch]:  # pairs with anchor records: both count
            self._count(part)
        self.batches += 1
        if self.batches % self.every_n_steps == 0:
            self._log(trainer, self.seconds + self._sync(pl_module) - self._t0)

    def _count(self, batch: dict[str, Any]) -> None:
        ids, mask, labels = batch["input_ids"], batch.get("attention_mask"), batch.get("labels")
        if "real_tokens" in batch:  # packed rows say how many tokens are real
            real, sequences = batch["real_tokens"], batch["sequences"]
        else:
            real, sequences = (mask.sum() if mask is not None else ids.numel()), ids.shape[0]
        self.real = self.real + real
        self.sequences = self.sequences + sequences
        self.head_tokens = self.head_tokens + (
            (labels != IGNORE_INDEX).sum() if self.counts.head_on_labels_only and labels is not None else real
        )
        self.total += ids.numel()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is not None:  # validation inside a window does not count as training time
            self.seconds += self._sync(pl_module) - self._t0
            self._t0 = None

    def _log(self, trainer: L.Trainer, seconds: float) -> None:
        real, sequences, head_tokens = int(self.real), int(self.sequences), int(self.head_tokens)  # read once a window
        if seconds <= 0 or not real:
            return
        self._time += seconds
        self._batches += self.batches
        self._sequences += sequences
        self._real += real
        self.throughput.update(
            time=self._time,
            batches=self._batches,
            samples=self._sequences,
            lengths=self._real,
            flops=self.counts.flops(real, sequences, head_tokens),
        )
        rates = self.throughput.compute()
        if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(trainer.strategy.root_device) / 2**20
        else:  # ru_maxrss: KB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
        metrics = {
            "perf/tokens_per_s": rates["device/items_per_sec"],
            "perf/padding_fraction": 1 - real / self.total,
            "perf/peak_memory_mb": peak_mb,
            "perf/mfu": rates["device/mfu"],
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self._reset_window()
