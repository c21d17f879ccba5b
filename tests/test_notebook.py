"""scripts/quickstart.ipynb runs top to bottom in a real Jupyter kernel."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes():
    nb = nbformat.read(ROOT / "scripts" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "4-bit linear layers: 14" in text
    assert "merged vs. weighted at run time" in text and "LEARNED:" in text
