"""``politician-lm``: dispatch only. Trainer verbs go to ``politician_lm.training`` (a LightningCLI); every other
verb is a typed function named in ``COMMANDS`` and parsed by jsonargparse from its signature and docstring.

Nothing heavy is imported until a verb runs, so ``politician-lm --help`` answers at once: the overview reads each
command's one-line summary from its source without importing it. Adding a verb is one line in ``COMMANDS``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from politician_lm.errors import UserError
from politician_lm.hints import TRAINER_COMMANDS, config_names, obvious_mistake

# Non-trainer verbs: name -> "module:function"; jsonargparse builds each parser from the signature and docstring.
COMMANDS: dict[str, str] = {
    "merge": "politician_lm.commands.merge:merge",
    "export": "politician_lm.commands.export:export",
    "export-vllm": "politician_lm.commands.export_vllm:export_vllm",
    "generate": "politician_lm.commands.generate:generate",
    "chat": "politician_lm.commands.generate:chat",
    "evaluate": "politician_lm.commands.evaluate:evaluate",
    "stages": "politician_lm.commands.stages:stages",
    "pairs": "politician_lm.commands.pairs:pairs",
    "prepare": "politician_lm.commands.prepare:prepare",
    "import-model": "politician_lm.commands.import_model:import_model",
    "serve": "politician_lm.commands.serve:serve",
}


def load_command(name: str) -> Callable[..., Any]:
    module, _, function = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def summary(target: str) -> str:
    """First line of a command's docstring, read from the source file (no import)."""
    module, _, function = target.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return (ast.get_docstring(node) or "").strip().splitlines()[0] if ast.get_docstring(node) else ""
    return ""


def overview() -> str:
    lines = [
        "usage: politician-lm COMMAND [options]   (politician-lm COMMAND --help for its options)",
        "",
        "training (LightningCLI; --config, --print_config, dotted overrides):",
    ]
    lines += [
        f"  {name:<12} {doc}"
        for name, doc in (
            ("fit", "fine-tune an adapter: politician-lm fit --config configs/demo.yaml"),
            ("validate", "validation loss of a checkpoint (--ckpt_path last|best|FILE)"),
            ("test", "test loss of a checkpoint (--ckpt_path last|best|FILE)"),
            ("predict", "greedy generations for the validation prompts -> predictions.jsonl"),
        )
    ]
    lines += ["", "adapters and inference:"]
    lines += [f"  {name:<12} {summary(target)}" for name, target in COMMANDS.items()]
    return "\n".join(lines)


def check_config_files(args: list[str]) -> None:
    """Every ``--config`` file exists and is a YAML mapping; errors name the file (jsonargparse's do not)."""
    import yaml

    for name in config_names(args):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path}: config is not UTF-8 text") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})") from None
        if content is not None and not isinstance(content, dict):
            raise UserError(f"{path}: a config must be a mapping of keys to values")


def _underscored(arg: str) -> str:
    """Accept the old script's ``--output-dir`` spelling for ``--output_dir``."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def _fail(message: str, code: int = 2) -> None:
    print(f"politician-lm: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(overview())
        return
    if args[0] not in COMMANDS and args[0] not in TRAINER_COMMANDS:
        _fail(f"unknown command {args[0]!r}; one of {', '.join([*TRAINER_COMMANDS, *COMMANDS])}")
    if args[0] in TRAINER_COMMANDS and (mistake := obvious_mistake(args)):
        _fail(mistake)
    from politician_lm import allocator
    from politician_lm.switches import ARITHMETIC, switch_problem

    if message := allocator.problem() or next(filter(None, map(switch_problem, ARITHMETIC)), None):
        _fail(message)  # a mistyped POLITICIAN_LM_* switch, before it is silently taken for "on"
    if argv is None:  # the real process entry (not a call from Python): pick the allocator before torch loads
        allocator.reexec_with_tcmalloc(args)
    from politician_lm.quiet import quiet_libraries

    quiet_libraries()
    try:
        from argparse import ArgumentError

        try:
            check_config_files(args)
            if args[0] in COMMANDS:
                from jsonargparse import auto_cli

                auto_cli(
                    load_command(args[0]),
                    args=[_underscored(a) for a in args[1:]],
                    as_positional=False,
                    exit_on_error=False,
                    prog=f"politician-lm {args[0]}",
                )
            else:
                from politician_lm.training import run_trainer_cli

                run_trainer_cli(argv)  # None: LightningCLI reads sys.argv itself
        except ArgumentError as e:
            message = str(e)
            if configs := config_names(args):
                message = f"{' '.join(message.split())} (config: {', '.join(configs)})"
            _fail(message)
    except UserError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        print("\npolitician-lm: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
