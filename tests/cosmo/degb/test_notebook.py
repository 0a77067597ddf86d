"""The example notebook runs top to bottom and shows the paper's structure."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[3] / "examples" / "degb_attractors.ipynb"


def test_notebook_executes():
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []))
  assert "(7*x**2 - 1)/(3*(x**2 + 1))" in text
  assert "RD -> scaling" in text and "RD -> w=-1/3" in text and "RD -> kination" in text
  assert "'bounded': True" in text
