"""Atomic writes for everything a user keeps: write under a temporary name in the same folder, then rename."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from politician_lm.errors import UserError


def _umask_mode(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    On any exception the temporary folder is removed and ``target`` is untouched. When ``target`` exists it is
    renamed aside first and removed after the new folder is in place, so at every instant ``target`` is either
    the old complete folder, absent for an instant, or the new complete folder, never a half-written one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", suffix=f"-{os.getpid()}", dir=target.parent))
    os.chmod(tmp, _umask_mode(0o777))
    try:
        yield tmp
        for path in tmp.rglob("*"):  # some writers (safetensors) create 0600 files; a kept folder reads like any other
            if path.is_file() and not path.is_symlink():
                os.chmod(path, _umask_mode(0o666))
        if target.exists() and _exchange(tmp, target):
            _remove(tmp)  # after the swap, tmp holds the old folder (or file)
            return
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            _remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove(path: Path) -> None:
    """Remove a folder or a file, ignoring errors (what ``atomic_dir`` replaced)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def recover_dir(target: str | Path) -> None:
    """Clean up after a crash inside ``atomic_dir``: restore a folder left renamed aside, drop temporaries."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{target.name}.old-*"))
    if olds and not target.exists():
        os.replace(olds.pop(), target)  # the crash came between the two renames: the old folder is complete
    for leftover in [*olds, *target.parent.glob(f".{target.name}.tmp-*")]:
        if leftover.is_dir() and not _in_use(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def _in_use(path: Path) -> bool:
    """A temporary of a live process (its pid in the name for .old-PID); temporaries of dead writers are stale."""
    pid = path.name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except OSError:
        return False
    return True


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; whatever is written there replaces ``path`` in one rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and one rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def held_input(path: str | Path, inputs: Iterable[str | Path | None]) -> str | Path | None:
    """The first of ``inputs`` that exists and is ``path`` or lies inside it: what replacing ``path`` would delete."""
    inside = Path(path).resolve()
    return next((g for g in inputs if g and Path(g).exists() and Path(g).resolve().is_relative_to(inside)), None)


def check_output(
    path: str | Path,
    overwrite: bool,
    flag: str = "--output_dir",
    folder: bool = True,
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Refuse an existing output unless ``overwrite``; even with it, a file where a ``folder`` is written (a mistyped
    path would lose the file), a folder where a file is written, and an output that is or holds one of the
    command's ``inputs`` (replacing it would delete them). First repairs what a crash mid-write may have left."""
    path = Path(path)
    recover_dir(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file, and {flag} names the folder to write; choose another {flag}")
    if not folder and path.is_dir():
        raise UserError(f"{path}: is a folder, and {flag} names the file to write; choose another {flag}")
    if (given := held_input(path, inputs)) is not None:
        held = "the output folder holds the input" if folder else "is also the input"
        raise UserError(f"{path}: {held} {given}, which writing it would delete; choose another {flag}")
    if path.exists() and not overwrite:
        kind = "folder" if path.is_dir() else "file"
        raise UserError(f"{path}: output {kind} exists; choose another {flag} or pass --overwrite true")
    return path
