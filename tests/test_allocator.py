"""The CLI re-executes itself under tcmalloc where it is installed (half the peak RSS of glibc malloc on CPU)."""

import os
import subprocess
import sys

import pytest

from politician_lm import allocator

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
