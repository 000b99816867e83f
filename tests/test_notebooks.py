"""Every notebook runs top to bottom, with its STEPS cell cut down for CI."""

import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name}: clear the outputs before committing"
    parameters = [c for c in notebook.cells if c.cell_type == "code" and re.match(r"STEPS = \d+", c.source)]
    assert len(parameters) == 1, f"{path.name}: needs one cell starting 'STEPS = <int>'"
    parameters[0].source = re.sub(r"STEPS = \d+", "STEPS = 30", parameters[0].source)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    kl = float(re.search(r"KL\(q \|\| p\) = (-?[\d.]+)", printed).group(1))
    bound = float(re.search(r"bound after 30 steps: (-?[\d.]+)", printed).group(1))
    assert kl > -0.05 and bound + 1.8775 > -0.05  # a KL: non-negative up to Monte Carlo error
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: the figure was not drawn"
