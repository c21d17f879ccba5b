"""On CPU, inference multiplies by frozen float32 weights packed once for oneDNN, instead of through MKL's sgemm.

PyTorch's CPU ``nn.Linear`` calls MKL, which on this project's reference machine (AMD EPYC, 2 cores) runs a
decoding step's products (32 rows by SmolLM2's weights) at 50-85 GFLOP/s on one thread. oneDNN, which PyTorch ships
as well, multiplies the same rows by a weight reordered once into its blocked layout (``mkldnn._reorder_linear_weight``,
as inductor's CPU freezing pass does) at 95-110 GFLOP/s on one thread and 160-220 on two (``docs/performance.md``).
A row's result does not depend on how many rows share the product, as with MKL.

``pack_linears`` turns every eligible ``nn.Linear`` of a model into a ``PackedLinear``: frozen, float32, on CPU, at
least ``MIN_FEATURES`` inputs and outputs (LoRA's narrow matrices stay as they are). ``PackedLinear`` packs its
weight at the first call that needs no gradient, keeps the packed copy (the float32 weight stays, for merges and
state dicts: the layer's memory doubles), and packs again when the weight is replaced or changed in place (a merge).
``POLITICIAN_LM_PACKED_LINEAR=0`` turns packing off (for a model whose float32 weights fill the memory once).
A call that needs a gradient, other dtypes and other devices run ``nn.Linear``'s own forward. The values agree with
MKL's to float32 rounding (about 1e-6 relative), not bit for bit; every inference path (``generate``, ``chat``,
``serve``, ``evaluate``, the fit-time callbacks) uses the same packed layers, so their answers agree with each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from politician_lm.switches import PACKED_LINEAR, switched_off

__all__ = ["SWITCH", "MIN_FEATURES", "PackedLinear", "pack_linears", "packed", "unpack_linears"]

MIN_FEATURES = 64
SWITCH = PACKED_LINEAR  # "0" keeps PyTorch's own nn.Linear (and the memory of the packed copies)


def _available() -> bool:
    if switched_off(SWITCH):
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _version(w: torch.Tensor) -> int:
    """The weight's in-place change counter; -1 for a weight made under ``torch.inference_mode`` (which has none,
    and cannot be changed in place outside it)."""
    try:
        return w._version
    except RuntimeError:
        return -1


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose gradient-free float32 CPU calls multiply by its weight packed for oneDNN."""

    _packed: torch.Tensor | None = None
    _packed_from: tuple[int, int] | None = None  # (id, version) of the weight the packed copy was made from

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
        if wants_grad or x.dtype != torch.float32 or w.dtype != torch.float32 or x.device.type != "cpu":
            return super().forward(x)
        source = (id(w), _version(w))
        if self._packed is None or self._packed_from != source:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach())
            self._packed_from = source
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")

    def __getstate__(self) -> dict[str, Any]:  # a copy or a pickle packs again at its first call
        return {**super().__getstate__(), "_packed": None, "_packed_from": None}


def _eligible(module: torch.nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return (
        type(module) is torch.nn.Linear
        and w is not None
        and w.dtype == torch.float32
        and w.device.type == "cpu"
        and not w.requires_grad
        and min(module.in_features, module.out_features) >= MIN_FEATURES
    )


def pack_linears(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Make every eligible ``nn.Linear`` of ``model`` a ``PackedLinear`` (in place, packed at first use); returns
    the layers changed. Nothing changes where PyTorch has no oneDNN."""
    if not _available():
        return []
    layers = [m for m in model.modules() if _eligible(m)]
    for layer in layers:
        layer.__class__ = PackedLinear
    return layers


def unpack_linears(layers: list[torch.nn.Module]) -> None:
    """Make ``layers`` (``pack_linears``' result) plain ``nn.Linear`` again and free their packed copies."""
    for layer in layers:
        if isinstance(layer, PackedLinear):
            layer._packed = layer._packed_from = None
            layer.__class__ = torch.nn.Linear


@contextmanager
def packed(model: torch.nn.Module) -> Iterator[Any]:
    """``model`` with its eligible layers packed for the ``with`` block only (the fit-time callbacks' generation)."""
    layers = pack_linears(model)
    try:
        yield model
    finally:
        unpack_linears(layers)
