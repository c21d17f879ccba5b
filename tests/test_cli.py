"""Bad input: a one-line error naming file and line, a non-zero exit, no run folder, and no model loaded."""

import pytest

from politician_lm.cli import main

GOOD = '{"prompt": "USER: hi", "completion": "POLITICIAN: folks"}\n'

# (case id, file bytes, expected fragment of the message, line number expected in the message)
DATA_CASES = [
    ("malformed-json", GOOD + '{"prompt": "USER: hi", "completion": \n', "malformed JSON", 2),
    ("missing-key", GOOD * 2 + '{"prompt": "USER: hi", "answer": "x"}\n', "missing key(s) 'completion'", 3),
    ("wrong-type", GOOD + '{"prompt": "USER: hi", "completion": 42}\n', "'completion' must be a string", 2),
    ("empty-completion", '{"prompt": "USER: hi", "completion": "  "}\n', "'completion' is empty", 1),
    ("non-utf8", GOOD + '{"prompt": "USER: caf\xe9", "completion": "x"}\n', "not valid UTF-8", 2),
    ("not-an-object", GOOD + '["USER: hi", "POLITICIAN: x"]\n', "expected a JSON object", 2),
    ("bad-messages", '{"messages": [{"role": "user", "content": "hi"}]}\n', "last message must be", 1),
    (
        "bad-role",
        '{"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n',
        "role 'bot'",
        1,
    ),
    ("empty-file", "", "file is empty", None),
]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def fit_args(data_path, run_dir, *extra):
    return [
        "fit",
        "--config",
        "configs/demo.yaml",
        "--data.data_path",
        str(data_path),
        "--trainer.default_root_dir",
        str(run_dir),
        *extra,
    ]


@pytest.mark.parametrize("case,content,fragment,line", DATA_CASES, ids=[c[0] for c in DATA_CASES])
@pytest.mark.slow
def test_bad_data_file(case, content, fragment, line, tmp_path, capsys, chdir_root):
    data = tmp_path / "data.jsonl"
    data.write_bytes(content.encode("latin-1"))
    run_dir = tmp_path / "run"
    code, err = run_cli(fit_args(data, run_dir), capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("politician-lm: error:")]
    assert len(lines) == 1, err
    where = f"{data}:{line}:" if line else f"{data}:"
    assert where in lines[0] and fragment in lines[0], lines[0]
    assert not run_dir.exists()


def test_missing_path(tmp_path, capsys, chdir_root):
    code, err = run_cli(fit_args(tmp_path / "nope.jsonl", tmp_path / "run"), capsys)
    assert code == 2 and "nope.jsonl: data path does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_unknown_politician(tmp_path, capsys, chdir_root):
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD * 3)
    code, err = run_cli(fit_args(data, tmp_path / "run", "--data.politician", "nixon"), capsys)
    assert code == 2 and "unknown politician 'nixon'" in err and "biden" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_path_escape_in_politician_name_is_refused(tmp_path, capsys, chdir_root):
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD * 3)
    code, err = run_cli(fit_args(data, tmp_path / "run", "--data.politician", "../../etc/passwd"), capsys)
    assert code == 2 and "unknown politician" in err


def test_unknown_prompt_format(tmp_path, capsys, chdir_root):
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD * 3)
    code, err = run_cli(fit_args(data, tmp_path / "run", "--data.prompt_format", "alpaca"), capsys)
    assert code != 0 and "prompt_format" in err and "alpaca" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_lora_settings_peft_refuses_are_one_line(tmp_path, capsys, chdir_root):
    """A target module the base does not have (a typo) was PEFT's traceback; it is one line naming the keys."""
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD * 6)
    code, err = run_cli(fit_args(data, tmp_path / "run", "--model.target_modules", "[q_prj]"), capsys)
    line = one_line(err)
    assert code == 2 and "model.target_modules" in line and "q_prj" in line and "MistralForCausalLM" in line


# -- the command line itself: one line that says what to do, before anything heavy ----------------------------
def one_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("politician-lm: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["fit"], ["add --config configs/demo.yaml"]),
        (["fit", "configs/demo.yaml"], ["goes after --config", "politician-lm fit --config configs/demo.yaml"]),
        (
            ["fit", "--config", "configs/demo.yaml", "--model.lora_rank", "16"],
            ["--model.lora_rank", "did you mean --model.lora_r?"],
        ),
        (["fit", "--config", "configs/demo.yaml", "--output-dir", "X"], ["--output-dir", "--trainer.default_root_dir"]),
        (["fit", "--config", "configs/demo.yaml", "--trainer.max_epocs", "2"], ["did you mean --trainer.max_epochs?"]),
        # every flag of the README's old-flags table names its key (--base-model had suggested --model)
        (["fit", "--config", "configs/demo.yaml", "--base-model", "X"], ["use --model.model_name_or_path"]),
        (
            ["fit", "--config", "configs/demo.yaml", "--evaluation"],
            ["use --trainer.callbacks+=politician_lm.callbacks"],
        ),
        (["fit", "--config", "configs/demo.yaml", "--politician", "biden"], ["use --data.politician"]),
    ],
    ids=[
        "no-config",
        "config-without-flag",
        "typo",
        "old-output-dir",
        "trainer-typo",
        "old-base-model",
        "old-evaluation",
        "old-politician",
    ],  # fmt: skip
)
def test_command_line_mistakes_point_at_the_fix(args, fragments, tmp_path, capsys, chdir_root):
    code, err = run_cli([*args, "--trainer.default_root_dir", str(tmp_path / "run")] if len(args) > 2 else args, capsys)
    line = one_line(err)
    assert code == 2 and all(f in line for f in fragments), line
    assert not (tmp_path / "run").exists()


def test_gpu_recipe_on_a_machine_without_cuda_is_one_line(tmp_path, capsys, chdir_root):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = run_cli(
        ["fit", "--config", "configs/biden.yaml", "--trainer.default_root_dir", str(tmp_path / "r")], capsys
    )
    line = one_line(err)
    assert code == 2 and "configs/biden.yaml" in line and "needs a CUDA GPU" in line and "configs/demo.yaml" in line
    assert not (tmp_path / "r").exists()


HELP_IMPORTS = """
import sys
from politician_lm.cli import main
main(["--help"])
HEAVY = ("torch", "lightning", "transformers", "datasets", "peft", "jsonargparse")
print("HEAVY", sorted(m for m in HEAVY if m in sys.modules))
"""


def test_help_imports_nothing_heavy():
    """`politician-lm --help` must answer at once: the overview imports no ML library (it took 9 s when it did)."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    proc = subprocess.run([sys.executable, "-c", HELP_IMPORTS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fit" in proc.stdout and "chat" in proc.stdout and "HEAVY []" in proc.stdout, proc.stdout[-500:]
    summary = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("merge")]
    assert summary and "Combine LoRA adapters" in summary[0]  # summaries still come from the docstrings


def interrupted() -> None:
    """A command that the user stops with Ctrl-C."""
    raise KeyboardInterrupt


def test_ctrl_c_in_any_command_prints_one_line_and_no_traceback(capsys, monkeypatch):
    from politician_lm import cli

    monkeypatch.setitem(cli.COMMANDS, "interrupted", "tests.test_cli:interrupted")
    with pytest.raises(SystemExit) as exc:
        main(["interrupted"])
    err = capsys.readouterr().err
    assert exc.value.code == 130 and err.strip() == "politician-lm: interrupted" and "Traceback" not in err


def test_a_config_without_a_base_model_is_one_line_not_the_toy_model(tmp_path, capsys, chdir_root):
    config = tmp_path / "no-model.yaml"
    config.write_text("trainer:\n  max_steps: 1\ndata:\n  data_path: data/biden\n")
    code, err = run_cli(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "model.model_name_or_path is not set" in err and str(config) in err
    assert not (tmp_path / "run").exists()


def test_noise_filters_come_back_after_a_catch_warnings_block_dropped_them():
    """pytest, notebooks and libraries wrap code in ``warnings.catch_warnings()``, which restores the filter list on
    exit: filters installed inside were lost, and a done-once flag kept the next fit from installing them again."""
    import warnings

    from politician_lm.quiet import quiet_libraries

    message = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    with warnings.catch_warnings():
        warnings.resetwarnings()
        with warnings.catch_warnings():
            quiet_libraries()  # installed here, dropped when the block exits
        quiet_libraries()
        quiet_libraries()  # adds nothing the second time
        ours = [f for f in warnings.filters if f[1] is not None and "is_gradient_checkpointing" in f[1].pattern]
        assert len(ours) == 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn(message, FutureWarning, stacklevel=1)
        assert caught == []


def test_lightning_console_messages_go_through_the_current_stderr():
    """rich redirects stderr around its live progress display; a handler holding the stderr of import time wrote
    under the display instead, and the terminal showed the progress block twice."""
    import contextlib
    import io
    import logging
    import sys

    from politician_lm.quiet import log_through_current_stderr

    handler = logging.StreamHandler(sys.__stderr__)
    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(handler)
    try:
        log_through_current_stderr()
        buffer = io.StringIO()
        with contextlib.redirect_stderr(buffer):
            handler.emit(logging.LogRecord("lightning.pytorch", logging.INFO, __file__, 1, "fit stopped", None, None))
        assert buffer.getvalue() == "fit stopped\n"
    finally:
        logger.removeHandler(handler)
