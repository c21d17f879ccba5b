"""Silence library messages that tell a politician-lm user nothing they can act on; each filter is narrow.

``quiet_libraries`` needs only the standard library, so the CLI installs it before anything heavy is imported
(bitsandbytes logs its message once, at import). ``quiet_training`` also turns off the ``datasets`` progress bars
(about 30 lines per fit for a few hundred records) and is called where training starts.
"""

from __future__ import annotations

import logging
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.prefixes)


_installed = False


def quiet_libraries() -> None:
    """Log filters and warning filters for known noise (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    # bitsandbytes on CPUs with AVX512-BF16 tries an optional hub kernel and logs a warning that looks like a
    # broken install; politician-lm turns that kernel path off anyway (model.loading.keep_fp32_on_cpu).
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessages("Failed to load CPU gemm_4bit_forward"))
    # Lightning's advertisement for its hosted logger, printed by every Trainer
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning_utilities.core.rank_zero",
    ):
        logging.getLogger(name).addFilter(_DropMessages("💡 Tip"))
    # printed before anything else, including before a one-line error about the config or the data
    logging.getLogger("lightning.fabric.utilities.seed").addFilter(_DropMessages("Seed set to"))
    # deprecations inside the libraries (transformers called by PEFT, Lightning's own pytree use):
    # nothing to change here
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # after the run-folder rules (politician_lm.training), a non-empty checkpoint folder means a resume
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # the PoliticianDataModule restores the train position itself (its state_dict/load_state_dict), so a mid-epoch
    # resume continues on the batches the interrupted run would have seen
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


def quiet_training() -> None:
    quiet_libraries()
    import datasets

    datasets.disable_progress_bars()
