"""The package's imports run one way (pyproject's import-linter contracts) and never in a cycle.

Both checks read every import statement, including the ones inside functions. Each is also shown to fail: on a copy
of the package with one arrow turned back up, and with one cycle added.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def cycles(package: str) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), over grimp's import graph."""
    graph = grimp.build_graph(package, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-c",
        "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        "--no-cache",
    ]
    return subprocess.run(
        command,
        cwd=cwd,
        env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "politician_lm", tmp_path / "politician_lm", ignore=shutil.ignore_patterns("__pycache__", "*.html")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(module_file: Path, statement: str) -> None:
    text = module_file.read_text(encoding="utf-8")
    module_file.write_text(text + f"\n\ndef _added_by_the_test():\n    {statement}\n", encoding="utf-8")


def test_imports_keep_the_layers():
    result = lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_package_has_no_import_cycle():
    assert cycles("politician_lm") == []


def test_an_arrow_back_up_breaks_the_contract(tmp_path):
    copy = copy_of_package(tmp_path)
    add_import(copy / "politician_lm/data/records.py", "from politician_lm.model import module  # data -> model")
    result = lint_imports(copy, copy)
    assert result.returncode != 0
    assert "politician_lm.data.records -> politician_lm.model.module" in result.stdout


@pytest.mark.parametrize(
    "upward",
    [
        ("politician_lm/evaluation/metrics.py", "from politician_lm.callbacks import evaluation"),
        ("politician_lm/model/module.py", "from politician_lm.data import datamodule"),
        ("politician_lm/artifacts/adapter.py", "from politician_lm.inference import load_persona"),
    ],
)
def test_other_forbidden_arrows_are_caught(tmp_path, upward):
    copy = copy_of_package(tmp_path)
    add_import(copy / upward[0], upward[1])
    assert lint_imports(copy, copy).returncode != 0


def test_a_cycle_is_found(tmp_path, monkeypatch):
    copy = copy_of_package(tmp_path)
    # records -> templates -> records: a cycle inside one layer, which the layers contract alone would allow
    add_import(copy / "politician_lm/data/templates.py", "from politician_lm.data import records")
    add_import(copy / "politician_lm/data/records.py", "from politician_lm.data import templates")
    monkeypatch.syspath_prepend(str(copy))
    for name in [m for m in sys.modules if m == "politician_lm" or m.startswith("politician_lm.")]:
        monkeypatch.delitem(sys.modules, name)
    assert ["politician_lm.data.records", "politician_lm.data.templates"] in cycles("politician_lm")
