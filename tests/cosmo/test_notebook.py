from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "cosmo_omegam.ipynb"


@pytest.mark.slow  # NUTS compilation in a fresh kernel: ~5 min on the shared 2-core machine
def test_notebook_reproduces_omegam_vs_zeff_figure(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  assert text.count("sigma from Planck") == 3 and text.count("NUTS Om =") == 3
  assert any("image/png" in o.get("data", {}) for o in nb.cells[-1].outputs)
  assert (tmp_path / "omegam_vs_zeff.png").stat().st_size > 0
