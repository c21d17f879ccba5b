"""Input files of ``prepare``: named or found in folders, read as UTF-8; the errors ``--skip_bad`` skips."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from politician_lm.artifacts.jsonl import read_utf8
from politician_lm.errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".srt", ".vtt")  # captions: see captions.py, read_transcript
TABLE_SUFFIXES = (".csv", ".json", ".jsonl")
log = logging.getLogger(__name__)


class BadLine(UserError):
    """One record or line is unusable; ``skip_bad`` drops it (reason ``bad_line``)."""


class BadFile(UserError):
    """A whole transcript is unusable (encoding, no text, no speaker); ``skip_bad`` drops it (``bad_file``)."""


def expand(paths: list[str] | str | None, suffixes: tuple[str, ...], flag: str, skip: Path | None = None) -> list[Path]:
    """Files named directly or found (recursively, sorted) in the folders named; UserError for missing ones.

    Inside folders, hidden files and folders and anything under ``skip`` (the output folder) are left out.
    """
    out: list[Path] = []
    skip = skip.resolve() if skip is not None else None
    for p in [paths] if isinstance(paths, str) else paths or []:
        path = Path(p)
        if path.is_dir():
            files = [
                f
                for f in sorted(path.rglob("*"))
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
                and (skip is None or not f.resolve().is_relative_to(skip))
            ]
            found = [f for f in files if f.suffix.lower() in suffixes]
            _warn_unread(path, files, flag)
            if not found:
                raise UserError(f"{path}: folder holds no {'/'.join(suffixes)} files (given to --{flag})")
            out += found
        elif path.is_file():
            if path.suffix.lower() not in suffixes:
                raise UserError(f"{path}: --{flag} takes {'/'.join(suffixes)} files or folders of them")
            out.append(path)
        else:
            raise UserError(f"{path}: no such file or folder (given to --{flag})")
    return list(dict.fromkeys(out))


def _warn_unread(folder: Path, files: list[Path], flag: str) -> None:
    """One warning line for files in ``folder`` that no input of ``prepare`` reads (captions, PDFs, documents)."""
    readable = {*TEXT_SUFFIXES, *TABLE_SUFFIXES}
    unread = Counter(f.suffix.lower() or "(no suffix)" for f in files if f.suffix.lower() not in readable)
    if unread:
        kinds = ", ".join(f"{suffix} {n}" for suffix, n in unread.most_common())
        log.warning(
            f"{folder}: skipped {sum(unread.values())} file(s) that --{flag} cannot read ({kinds}); "
            f"convert them to {'/'.join(TEXT_SUFFIXES[:3])} text to use them"
        )


def read_text(path: Path) -> str:
    """The file as UTF-8 text; ``BadFile`` naming the line of the first undecodable byte."""
    return read_utf8(path, BadFile)
