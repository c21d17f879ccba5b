"""What a checkpoint needs beyond Lightning's own state so that a resumed fit continues exactly, and the one-line
errors for checkpoints that cannot be resumed.

- the RNG streams (LoRA dropout), so a resumed run draws what the uninterrupted run would have drawn;
- an epoch a stop cut short is saved as still open (``reopen_stopped_epoch``, which rewrites ``checkpoint["loops"]``);
- a checkpoint from other LoRA settings or another base is refused in one line (``check_checkpoint_fits``).

The checkpoint keys are part of the checkpoint format: old checkpoints must keep loading.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

import torch

from politician_lm.errors import UserError
from politician_lm.progress import batches_done_in_epoch, epoch_counted_done

if TYPE_CHECKING:
    import lightning.pytorch as L

RNG_KEY = "politician_lm_rng"
UNRESUMABLE_KEY = "politician_lm_unresumable"  # why fit cannot resume a checkpoint exactly (reopen_stopped_epoch)


def save_rng(checkpoint: dict[str, Any]) -> None:
    """Store the torch, Python and CUDA RNG states in ``checkpoint``."""
    checkpoint[RNG_KEY] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(checkpoint: dict[str, Any]) -> None:
    """Put back the RNG states ``save_rng`` stored; CUDA's only on the same number of devices."""
    rng = checkpoint.get(RNG_KEY)
    if not rng:
        return
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def refuse_unresumable(checkpoint: dict[str, Any], trainer: L.Trainer | None) -> None:
    """Fit stops in one line on a checkpoint ``reopen_stopped_epoch`` marked; validate and test may still read it."""
    if UNRESUMABLE_KEY in checkpoint and trainer is not None and trainer.state.fn == "fit":
        raise UserError(checkpoint[UNRESUMABLE_KEY])


def reopen_stopped_epoch(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
    """Save an epoch that a stop cut short (``trainer.should_stop``: ``max_time``, a callback) as still open.

    Lightning ends such an epoch as if it were complete (its ``on_train_epoch_end`` runs and the epoch counts as done),
    so the ``last.ckpt`` written as fit ends said "epoch finished" while the DataModule's position said "batch k of
    n": a resume started the next epoch, the sampler shuffled for that epoch and skipped its first k batches, and the
    rest of the cut epoch was never trained on (found on a DPO run; SFT the same). The saved epoch counters are set
    back to those a checkpoint at that batch's end holds (started, not processed), so the resume finishes the cut
    epoch on its own shuffle, as after a kill, and ``current_epoch`` and ``max_epochs`` keep counting as the
    uninterrupted run does. Reads Lightning's fit-loop progress counters through ``politician_lm.progress`` and
    rewrites their saved form (lightning 2.5-2.6; the stop-and-resume tests in tests/test_reliability.py and
    tests/model/test_preference.py fail if they move).

    A stop inside a gradient-accumulation window cannot be resumed exactly: the gradients of the batches since the
    last optimizer step are not in the checkpoint, and the dropout draws of those batches are already spent. Such a
    checkpoint is marked, and fit refuses to resume it in one line (``UNRESUMABLE_KEY``).
    """
    if trainer.state.fn != "fit":
        return
    batches, total = batches_done_in_epoch(trainer), trainer.num_training_batches
    if not math.isfinite(total) or not 0 < batches < total or not epoch_counted_done(trainer):
        return  # mid-epoch (the epoch is not counted yet), or the epoch ran to its end
    window = trainer.accumulate_grad_batches
    if batches % window:
        checkpoint[UNRESUMABLE_KEY] = (
            f"this checkpoint was saved when fit stopped after batch {batches} of an epoch, {batches % window} "
            f"batch(es) into a trainer.accumulate_grad_batches window of {window}: their gradients were never applied "
            "or saved, so a resume cannot continue exactly; start a new run from its adapter (--model.init_adapter)"
        )
    progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    for counts in (progress["total"], progress["current"]):
        counts["processed"] = counts["completed"] = counts["started"] - 1
    checkpoint["epoch"] = progress["current"]["completed"]


def check_checkpoint_fits(saved: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter]) -> None:
    """A checkpoint from other LoRA settings (rank, targets) or another base: one line naming the difference,
    instead of Lightning's list of size mismatches."""
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    missing = sorted(trainable.keys() - saved.keys())
    if missing:
        raise UserError(
            f"the checkpoint lacks {len(missing)} of this run's {len(trainable)} trainable tensors (e.g. "
            f"{missing[0]}): it was made with other model.target_modules or another base model; resume "
            "with the settings it was trained with, or start a new run"
        )
    for name, param in trainable.items():
        shape = tuple(saved[name].shape)
        if shape == tuple(param.shape):
            continue
        if ".lora_A." in name and shape[1:] == tuple(param.shape[1:]):
            raise UserError(
                f"the checkpoint was trained with model.lora_r {shape[0]}, this run has "
                f"model.lora_r {param.shape[0]}; resume with --model.lora_r "
                f"{shape[0]}, or start a new run"
            )
        raise UserError(
            f"the checkpoint's {name} has shape {list(shape)}, this run's has {list(param.shape)}: it was "
            "made with other LoRA settings or another base model; resume with the settings it was "
            "trained with, or start a new run"
        )
