"""What the callbacks read from the LightningModule and the DataModule, stated as ``typing.Protocol``s.

A callback checks its Protocols in ``setup`` (``require``) and stops with one line naming what is missing, instead
of reaching for private names or skipping part of its work. ``PoliticianLM`` and ``PoliticianDataModule`` satisfy
every Protocol here without importing this module (Protocols are structural).

=====================  ===========================================  ==========================================
callback               LightningModule                              DataModule
=====================  ===========================================  ==========================================
``AdapterExport``      ``ExportModule``                             ``ExportData``
``PersonaEvaluation``  ``EvaluationModule``                         ``EvaluationData``
``SideBySide``         ``AdapterModule``                            ``PromptData``
``QLoRAThroughput``    ``ThroughputModule``                         (none: it reads the batches)
=====================  ===========================================  ==========================================

Besides these members, ``AdapterExport`` writes the ``hparams`` every LightningModule and LightningDataModule has
to ``training_config.yaml``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, runtime_checkable

from politician_lm.errors import UserError

if TYPE_CHECKING:
    import torch

    from politician_lm.data.templates import PromptStyle

Split = Literal["train", "val", "test"]


# -- LightningModule ----------------------------------------------------------------------------------------------
@runtime_checkable
class AdapterModule(Protocol):
    """A LightningModule training a PEFT adapter on a causal LM."""

    model: Any
    """The PEFT-wrapped causal LM (``generate``, ``disable_adapter()``, ``save_pretrained``, ``get_base_model()``,
    ``config``); built in ``configure_model``, None before."""


@runtime_checkable
class EvaluationModule(AdapterModule, Protocol):
    @property
    def model_name_or_path(self) -> str:
        """The base model as configured (a local folder or a hub id): the key of its cached generic answers."""
        ...


@runtime_checkable
class ExportModule(AdapterModule, Protocol):
    @property
    def model_name_or_path(self) -> str:
        """The base model as configured, recorded in the adapter so it finds its base."""
        ...

    @property
    def quantization(self) -> str:
        """How the base weights are stored during training (``nf4``, ``fp4``, ``int8``, ``none``)."""
        ...


@runtime_checkable
class ThroughputModule(AdapterModule, Protocol):
    compute_dtype: torch.dtype | None
    """The matmul dtype (set in ``configure_model``): the dtype of the device peak MFU divides by."""

    @property
    def head_on_labels_only(self) -> bool:
        """Whether the output head runs only on positions that have a label (the completion tokens) rather than on
        every token: it decides the head's share of the FLOPs."""
        ...


# -- DataModule ---------------------------------------------------------------------------------------------------
@runtime_checkable
class ExportData(Protocol):
    tokenizer: Any
    """Saved next to the adapter (None: not saved)."""

    def prompt_metadata(self) -> dict[str, Any]:
        """What generation needs to rebuild the training prompt (JSON-safe); written to ``politician_lm.json``."""
        ...


@runtime_checkable
class PromptData(Protocol):
    """A DataModule whose prompts ``inference.Persona`` can render and answer."""

    tokenizer: Any
    style: PromptStyle

    def conversations(self, split: Split) -> tuple[list[list[dict[str, str]]], list[str]]:
        """The messages and the ``kind`` of every example of a split as trained on; reads the data on first use."""
        ...


@runtime_checkable
class EvaluationData(PromptData, Protocol):
    @property
    def data_path(self) -> str:
        """The training data (a JSONL file or a folder); the stance statements of its val.jsonl are validated on."""
        ...

    @property
    def profiles_dir(self) -> str:
        """Folder of ``<politician>.yaml`` profiles (facts the persona metrics check)."""
        ...

    @property
    def val_fraction(self) -> float:
        """The held-out share of the split rule (``records.split_bucket``)."""
        ...

    @property
    def seed(self) -> int:
        """The seed of the split rule."""
        ...


# -- checking -----------------------------------------------------------------------------------------------------
def members(protocol: type) -> list[str]:
    """The attribute and method names a Protocol declares (its own and those of the Protocols it extends)."""
    names: dict[str, None] = {}
    for cls in reversed(protocol.__mro__):
        if cls in (object, Protocol, Generic):
            continue
        for name in [*inspect.get_annotations(cls), *cls.__dict__]:
            if not name.startswith("_"):
                names[name] = None
    return list(names)


def require(obj: Any, protocol: type, callback: str, role: str) -> None:
    """Raise a one-line ``UserError`` when ``obj`` (the trainer's ``role``: LightningModule or DataModule) lacks a
    member of ``protocol``.

    Looked up with ``hasattr``, not ``isinstance``: from Python 3.12, ``isinstance`` against a Protocol finds
    attributes statically, and ``torch.nn.Module`` keeps submodules (such as ``model``) outside ``__dict__``.
    """
    wanted = members(protocol)
    missing = [name for name in wanted if obj is None or not hasattr(obj, name)]
    if not missing:
        return
    got = f"the trainer has no {role}" if obj is None else f"{type(obj).__name__} lacks {', '.join(missing)}"
    raise UserError(
        f"{callback} needs a {role} with {', '.join(wanted)} "
        f"(politician_lm.callbacks.contracts.{protocol.__name__}); {got}"
    )
