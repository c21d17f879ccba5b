"""The CLI re-executes itself under tcmalloc where it is installed (half the peak RSS of glibc malloc on CPU)."""

import os
import subprocess
import sys

import pytest

from politician_lm import allocator
from politician_lm.switches import FUSED_LORA, PACKED_LINEAR

needs_tcmalloc = pytest.mark.skipif(
    allocator.tcmalloc_library() is None,
    reason="tcmalloc is not installed (Debian: apt-get install libtcmalloc-minimal4)",
)


def _loaded_libraries(env_extra: dict[str, str]) -> str:
    """The dynamic loader's own list of the files it opened (LD_DEBUG=files) for a command that fails fast."""
    env = {**os.environ, "LD_DEBUG": "files", **env_extra}
    env.pop("LD_PRELOAD", None)
    env.pop(allocator.ENV, None) if allocator.ENV not in env_extra else None
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from politician_lm.cli import main; main()",
            "generate",
            "--prompt",
            "hi",
            "--base_model",
            "/nonexistent",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "base model folder does not exist" in proc.stderr  # the command itself ran, after the re-exec
    return proc.stderr


@needs_tcmalloc
@pytest.mark.slow
def test_cli_runs_under_tcmalloc():
    assert "tcmalloc" in _loaded_libraries({})


@needs_tcmalloc
@pytest.mark.slow
def test_system_allocator_opt_out():
    assert "tcmalloc" not in _loaded_libraries({allocator.ENV: "system"})


def test_environment_preloads_once():
    lib = allocator.tcmalloc_library()
    env = allocator.environment({"PATH": "/bin"})
    if lib is None:
        assert "LD_PRELOAD" not in env
        return
    assert env["LD_PRELOAD"] == lib and env[allocator.ENV] == "tcmalloc"
    assert allocator.environment(env)["LD_PRELOAD"] == lib  # not preloaded twice
    assert "LD_PRELOAD" not in allocator.environment({allocator.ENV: "system"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tcmalloc is preloaded on Linux only")
def test_tcmalloc_unpacked_into_the_virtual_environment_is_found(tmp_path, monkeypatch):
    """Without root, scripts/setup.sh unpacks the Debian package's library into <venv>/lib; the lookup finds it there
    when the system's folders have none."""
    monkeypatch.setattr(allocator, "_CANDIDATES", ())
    lib = tmp_path / "lib" / "libtcmalloc_minimal.so.4"
    assert allocator.tcmalloc_library(prefix=str(tmp_path)) != str(lib)  # not there yet
    lib.parent.mkdir()
    lib.write_bytes(b"")
    assert allocator.tcmalloc_library(prefix=str(tmp_path)) == str(lib)


_FRAGMENT = r"""
import torch
from politician_lm import allocator

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

torch.ones(1 << 20)  # a freed 4 MB mmap raises glibc's dynamic mmap threshold: 2 MB tensors now come from the heap
blocks = [torch.ones(1 << 19) for _ in range(120)]  # 120 x 2 MB, every page touched
del blocks[0:-1:2]  # free every other one: 60 holes of 2 MB inside the heap, whose top stays in use
before = rss_mb()
released = allocator.release_freed_heap()
after = rss_mb()
print(released, before, after, before - after)
"""


def _fragmented_heap(trim_env: str | None) -> tuple[bool, float]:
    """(whether malloc_trim released anything, MB of RSS it gave back) in a fresh process under glibc's malloc
    whose heap holds 120 MB of freed 2 MB tensors between live ones."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.TRIM_ENV)}
    env.update({allocator.ENV: "system", **({allocator.TRIM_ENV: trim_env} if trim_env is not None else {})})
    proc = subprocess.run([sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    released, _, _, freed = proc.stdout.split()
    return released == "True", float(freed)


needs_glibc = pytest.mark.skipif(
    not allocator.trims_heap({}), reason="malloc_trim is glibc's (Linux); other C libraries keep their own heap"
)


@needs_glibc
@pytest.mark.slow
def test_release_freed_heap_returns_fragmented_space_to_the_system():
    """Freed tensors between live ones stay resident under glibc; release_freed_heap hands them back (the default),
    POLITICIAN_LM_MALLOC_TRIM=0 keeps them."""
    released, freed = _fragmented_heap(None)
    assert released and freed > 100, freed  # about 120 MB of holes back to the system
    kept, freed_kept = _fragmented_heap("0")
    assert not kept and abs(freed_kept) < 5, freed_kept


def test_trims_heap_only_under_glibc_without_tcmalloc():
    glibc = allocator._malloc_trim() is not None
    assert allocator.trims_heap({}) is glibc
    assert allocator.trims_heap({allocator.TRIM_ENV: "1"}) is glibc
    assert not allocator.trims_heap({allocator.TRIM_ENV: "0"})
    for off in ("false", "Off", " no "):  # the spellings the other switches take (switches.switched_off)
        assert not allocator.trims_heap({allocator.TRIM_ENV: off})
    assert not allocator.trims_heap({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"})
    assert not allocator.trims_heap({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})


def _entry_from(folder, args: list[str]) -> subprocess.CompletedProcess:
    """Run ``politician-lm ARGS`` from ``folder`` through a console script like the one pip writes (its own folder
    first on sys.path, not the working folder), with tcmalloc's re-exec left to happen."""
    repo = os.path.dirname(os.path.dirname(allocator.__file__))
    script = folder.parent / "bin" / "politician-lm"
    script.parent.mkdir(exist_ok=True)
    body = f"import sys\nsys.path.insert(1, {repo!r})\nfrom politician_lm.cli import main\nsys.exit(main())\n"
    script.write_text(body)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
    cmd = [sys.executable, str(script), *args]
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env, timeout=300)


@needs_tcmalloc
@pytest.mark.slow
def test_reexec_keeps_the_entry_points_sys_path(tmp_path):
    """A yaml.py in the user's working folder is not imported by the process re-executed under tcmalloc (python -m
    would put that folder first on sys.path), and the usage line still names politician-lm."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "yaml.py").write_text("import sys\nsys.exit(7)\n")
    proc = _entry_from(work, ["fit", "--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: politician-lm [options] fit"), proc.stdout[:200]


@needs_tcmalloc
@pytest.mark.slow
@pytest.mark.parametrize("value", ["off", " System "])
def test_system_allocator_takes_the_switch_spellings(value):
    assert "tcmalloc" not in _loaded_libraries({allocator.ENV: value})


@needs_tcmalloc
@pytest.mark.slow
def test_tcmalloc_value_uses_tcmalloc():
    assert "tcmalloc" in _loaded_libraries({allocator.ENV: "tcmalloc"})


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,value",
    [(allocator.ENV, "glibc"), (allocator.TRIM_ENV, "disable"), (PACKED_LINEAR, "fast"), (FUSED_LORA, "of")],
)
def test_unknown_allocator_values_are_refused_in_one_line(name, value):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV, allocator.TRIM_ENV)}
    cmd = [sys.executable, "-c", "from politician_lm.cli import main; main()", "chat", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, name: value}, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout[:300]
    assert proc.stderr.count("\n") == 1 and f"{name}={value!r}" in proc.stderr and "off" in proc.stderr, proc.stderr


def test_allocator_values():
    for value in ("", "system", "System", " off ", "0", "no", "false"):
        assert allocator.problem({allocator.ENV: value}) is None, value
    for value in ("system", " off ", "0"):
        assert "LD_PRELOAD" not in allocator.environment({allocator.ENV: value})
    assert allocator.ENV in allocator.problem({allocator.ENV: "glibc"})
    assert allocator.TRIM_ENV in allocator.problem({allocator.TRIM_ENV: "disable"})
    with pytest.raises(ValueError, match=allocator.TRIM_ENV):
        allocator.trims_heap({allocator.TRIM_ENV: "disable"})
