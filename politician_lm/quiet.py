"""Silence library messages that tell a politician-lm user nothing they can act on; each filter is narrow.

``quiet_libraries`` needs only the standard library, so the CLI installs it before anything heavy is imported
(bitsandbytes logs its message once, at import). ``quiet_training`` also turns off the ``datasets`` progress bars
(about 30 lines per fit for a few hundred records) and is called where training starts.

Both are idempotent by content, not by a flag: a ``warnings.catch_warnings()`` block (pytest runs every test in one,
and notebooks and libraries use them too) restores the filter list when it exits, which silently dropped filters
installed inside it. A "done once" flag then kept the next call from putting them back, and transformers'
``is_gradient_checkpointing`` FutureWarning reached the terminal of every later fit in that process. Each call now
re-adds whatever is missing, so every fit starts with the filters in place.

``quiet_training`` also points Lightning's console log handlers at whatever ``sys.stderr`` is when they write.
Lightning creates them at import with the real stderr, so its messages during fit (``Trainer.fit` stopped: ...``)
went straight to the terminal under the live progress display, which rich had redirected stderr around: rich then
erased the wrong lines and drew its display again below the message, so a terminal showed the progress block twice
(and the message overwritten). Written through the current ``sys.stderr``, the message goes above the display, once.
"""

from __future__ import annotations

import logging
import sys
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.prefixes)


# logger name -> message prefixes dropped from it
_LOG_FILTERS: dict[str, tuple[str, ...]] = {
    # bitsandbytes on CPUs with AVX512-BF16 tries an optional hub kernel and logs a warning that looks like a
    # broken install; politician-lm turns that kernel path off anyway (model.loading.keep_fp32_on_cpu).
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # Lightning's advertisement for its hosted logger, printed by every Trainer
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip",),
    "lightning.fabric.utilities.rank_zero": ("💡 Tip",),
    "lightning_utilities.core.rank_zero": ("💡 Tip",),
    # printed before anything else, including before a one-line error about the config or the data
    "lightning.fabric.utilities.seed": ("Seed set to",),
}

# (message regex, category) for warnings.filterwarnings("ignore", ...)
_WARNING_FILTERS: tuple[tuple[str, type[Warning]], ...] = (
    # deprecations inside the libraries (transformers called by PEFT, Lightning's own pytree use): nothing to change
    # here
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
    # after the run-folder rules (politician_lm.training), a non-empty checkpoint folder means a resume
    (r"Checkpoint directory .* exists and is not empty", Warning),
    # the PoliticianDataModule restores the train position itself (its state_dict/load_state_dict), so a mid-epoch
    # resume continues on the batches the interrupted run would have seen
    (r"You're resuming from a checkpoint that ended before the epoch ended", Warning),
)


def _has_ignore_filter(pattern: str, category: type[Warning]) -> bool:
    """Whether ``warnings.filters`` already holds exactly this ignore filter (added anywhere in the list)."""
    return any(
        action == "ignore" and message is not None and message.pattern == pattern and cat is category
        for action, message, cat, _module, _lineno in warnings.filters
    )


def quiet_libraries() -> None:
    """Log filters and warning filters for known noise; adds only what is missing, so it is cheap to call again."""
    for name, prefixes in _LOG_FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.prefixes == prefixes for f in logger.filters):
            logger.addFilter(_DropMessages(*prefixes))
    for pattern, category in _WARNING_FILTERS:
        if not _has_ignore_filter(pattern, category):
            warnings.filterwarnings("ignore", message=pattern, category=category)


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at that moment (rich's proxy while a progress display is
    live, the terminal otherwise)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# the loggers Lightning gives a console handler of its own when it is imported
_LIGHTNING_CONSOLE_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def log_through_current_stderr() -> None:
    """Lightning's console handlers write through the current ``sys.stderr`` (see the module docstring); handlers
    someone pointed at another stream (a file, a capture) are left alone."""
    for name in _LIGHTNING_CONSOLE_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and handler.stream in (sys.__stderr__, sys.stderr):
                handler.setStream(_CurrentStderr())


def quiet_training() -> None:
    """``quiet_libraries``, no ``datasets`` progress bars, and Lightning's messages printed above the progress
    display; called at the start of every fit, after Lightning is imported."""
    quiet_libraries()
    log_through_current_stderr()
    import datasets

    datasets.disable_progress_bars()
