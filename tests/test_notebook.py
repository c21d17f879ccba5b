"""scripts/quickstart.ipynb runs top to bottom in a real Jupyter kernel."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "scripts" / "quickstart.ipynb", as_version=4)
    runs = tmp_path / "runs"  # the kernel inherits the variable: the notebook's adapters go here, not to the
    monkeypatch.setenv("POLITICIAN_LM_NOTEBOOK_RUNS", str(runs))  # checkout's runs/notebook, which a user may keep
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    assert (runs / "merged").is_dir()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "4-bit linear layers: 14" in text
    assert "merged vs. weighted at run time" in text and "LEARNED:" in text
