"""Every notebook runs top to bottom with its parameters cut down, and shows what it claims.

The notebooks run once, as the documentation site's tutorials (the `built_site` fixture:
myst-nb executes them with notebooks/small_parameters.json); these tests read the executed
copies, so the suite does not run them twice.
"""

import json
import pathlib
import re

import nbformat
import pytest

pytestmark = pytest.mark.xdist_group("site")

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
SMALL = json.loads((NOTEBOOKS[0].parent / "small_parameters.json").read_text())


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean_with_its_parameters_first(path):
    code = code_cells(nbformat.read(path, as_version=4))
    assert all(not cell.get("outputs") for cell in code), (
        f"{path.name}: clear the outputs before committing"
    )
    assert code[0].source.startswith("# Parameters"), (
        f"{path.name}: the first code cell holds the parameters"
    )
    named = set(re.findall(r"^(\w+) = ", code[0].source, flags=re.M))
    assert named & set(SMALL), f"{path.name}: no parameter the tests cut down"


def executed(path, built_site):
    copy = built_site.parent / "jupyter_execute" / "tutorials" / path.name
    assert copy.is_file(), f"{path.name} was not executed by the site's build"
    code = code_cells(nbformat.read(copy, as_version=4))
    for name in set(re.findall(r"^(\w+) = ", code[0].source, flags=re.M)) & set(SMALL):
        assert re.search(rf"^{name} = {re.escape(SMALL[name])}$", code[0].source, flags=re.M), (
            f"{path.name} ran without the small {name}"
        )
    printed = "".join(o.get("text", "") for cell in code for o in cell.outputs)
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    errors = [o for cell in code for o in cell.outputs if o.get("output_type") == "error"]
    return printed, images, errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_numbers_hold(path, built_site):
    printed, images, errors = executed(path, built_site)
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert images, f"{path.name}: the figure was not drawn"
    kls = [float(x) for x in re.findall(r"KL[^=\n]*= (-?[\d.]+)", printed)]
    assert all(kl > -0.05 for kl in kls), kls  # KL >= 0 up to Monte Carlo error
    bounds = [
        float(x)
        for x in re.findall(r"U1.*bound (-?[\d.]+)", printed)
        + re.findall(r"K=.*: bound (-?[\d.]+)", printed)
    ]
    assert all(b > -1.8775 - 0.05 for b in bounds), bounds  # the bound on U1 is at least -ln Z
    for elbo, nll in re.findall(r"-ELBO = ([\d.]+) .*-ln p\(x\) = ([\d.]+)", printed):
        assert float(nll) < float(elbo) + 1.0, (
            nll,
            elbo,
        )  # importance sampling tightens the ELBO, up to MC error
    assert kls or bounds, f"{path.name}: printed no number to check"
    khats = [float(x) for x in re.findall(r"Pareto k-hat (-?[\d.]+|inf|nan)", printed)]
    assert all(k == k and k < float("inf") for k in khats), khats
    # where q is a reliable proposal (k-hat < 0.7), importance sampling finds ln Z: by
    # quadrature for U1 (notebook 00), 0 for the normalised exact posterior (notebook 04)
    for khat, log_z, se, exact in re.findall(
        r"k-hat ([\d.]+).*?importance sampling = (-?[\d.]+) \+- ([\d.]+) \((?:quadrature|exact) "
        r"(-?[\d.]+)\)",
        printed,
    ):
        if float(khat) < 0.7:
            assert abs(float(log_z) - float(exact)) < 5 * float(se) + 0.05, (log_z, se, exact)
    if path.stem in ("00_quickstart", "01_planar_flows_2d", "04_bayesian_regression"):
        assert khats, f"{path.name}: printed no Pareto k-hat"
