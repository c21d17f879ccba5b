"""What to do about a command line the parser rejected: the flag that is missing, the key that was meant.

Standard library only, so the CLI can answer the obvious mistakes before it imports anything heavy.
"""

from __future__ import annotations

import difflib
import re

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
# the old training script's flags (README: "From the old training script"), in both spellings
OLD_FLAGS = {
    f"--{name}": key
    for old, key in {
        "output-dir": "--trainer.default_root_dir",
        "data-path": "--data.data_path",
        "epochs": "--trainer.max_epochs",
        "batch-size": "--data.batch_size",
        "learning-rate": "--model.optimizer.lr",
        "lora-r": "--model.lora_r",
        "lora-alpha": "--model.lora_alpha",
        "lora-dropout": "--model.lora_dropout",
        "mixed-precision": "--trainer.precision bf16-mixed",
        "model-name": "--model.model_name_or_path",
        "base-model": "--model.model_name_or_path",
        "politician": "--data.politician",
        "evaluation": "--trainer.callbacks+=politician_lm.callbacks.PersonaEvaluation",
    }.items()
    for name in (old, old.replace("-", "_"))
}


def config_names(argv: list[str]) -> list[str]:
    """The files given with ``--config``/``-c``."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")] + [
        a.split("=", 1)[1] for a in argv if a.startswith("--config=")
    ]


def obvious_mistake(argv: list[str]) -> str | None:
    """A trainer verb with nothing after it, or a config file without ``--config``; None otherwise."""
    verb = argv[0]
    if len(argv) == 1:
        return f"politician-lm {verb} needs a config: add --config configs/demo.yaml (or set every key, see --help)"
    if not argv[1].startswith("-") and argv[1].endswith((".yaml", ".yml")):
        return f"{argv[1]}: a config file goes after --config: politician-lm {verb} --config {argv[1]}"
    return None


def explain_parse_error(message: str, argv: list[str], options: list[str]) -> str:
    """jsonargparse's message plus what to do: the config flag that is missing, the key that was meant."""
    message = " ".join(message.split())
    verb = argv[0] if argv and argv[0] in TRAINER_COMMANDS else "fit"
    has_config = any(a in ("--config", "-c") or a.startswith("--config=") for a in argv)
    unknown = re.search(r"[Uu]nrecognized arguments: (.*)", message)
    if unknown:
        tokens = unknown.group(1).split()
        for token in tokens:
            name = token.split("=", 1)[0]
            if name in OLD_FLAGS:
                return f"{name} is the old script's flag; use {OLD_FLAGS[name]}"
            if name.startswith("--"):
                close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else f"; see politician-lm {verb} --help"
                return f"unknown option {name}{hint}"
        if tokens and tokens[0].endswith((".yaml", ".yml")):
            return f"{tokens[0]}: a config file goes after --config: politician-lm {verb} --config {tokens[0]}"
    if not has_config and ("required" in message or len(argv) <= 1):
        return f"politician-lm {verb} needs a config: add --config configs/demo.yaml (or set every key, see --help)"
    configs = config_names(argv)
    where = f" (config: {', '.join(configs)})" if configs else ""
    if re.search(r'"model\.model_name_or_path".*(required|Got value: None)', message):
        return (
            "model.model_name_or_path is not set: name the base model in the config or with "
            f"--model.model_name_or_path (a model folder such as checkpoints/SmolLM2-135M-Instruct, or a hub id){where}"
        )
    return f"{message}{where}"
