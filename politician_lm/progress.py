"""Where the fit loop stands in its epoch: the project's one read of Lightning's loop-progress counters.

Both the model (``model.resume``: an epoch a stop cut short is saved as still open) and the DataModule (mid-epoch
resume: how many batches to skip) need it, and ``model`` may not import ``data``, so it lives below both. Lightning
has no public count of this: ``trainer.global_step`` counts optimizer steps (fewer with gradient accumulation, none
for a skipped step), ``trainer.fit_loop.batch_idx`` counts batches started, and its resumable-DataLoader protocol
(``state_dict`` on the loader) captures the loader after prefetching has drawn the next batch. These are internals
(lightning 2.5-2.6): tests/test_reliability.py fails if a release moves or redefines them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning.pytorch as L


def _fit_loop_counter(trainer: L.Trainer, read: str) -> Any:
    """``trainer.fit_loop.<read>``, or one line naming the attribute a Lightning release moved."""
    value: Any = trainer.fit_loop
    try:
        for name in read.split("."):
            value = getattr(value, name)
    except AttributeError as e:
        import lightning

        raise RuntimeError(
            f"lightning {lightning.__version__} has no trainer.fit_loop.{read}; politician_lm.progress (mid-epoch "
            "resume) needs updating"
        ) from e
    return value


def batches_done_in_epoch(trainer: L.Trainer) -> int:
    """Training batches the trainer has finished in its current epoch (stepped, or skipped for a non-finite loss)."""
    return int(_fit_loop_counter(trainer, "epoch_loop.batch_progress.current.processed"))


def epoch_counted_done(trainer: L.Trainer) -> bool:
    """Whether the fit loop counts its current epoch as processed (it does once ``on_train_epoch_end`` has run, also
    for an epoch a stop cut short)."""
    epochs = _fit_loop_counter(trainer, "epoch_progress.current")
    return epochs.processed == epochs.started
