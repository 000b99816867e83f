"""Sphinx configuration of the tfnf site: `python -m sphinx -W -b html docs docs/_build/html`.

Sphinx, because its autodoc reads the package's own docstrings (Google style, through
napoleon) and type hints into an API page per public name without a hand-written
reference, and myst-nb executes the notebooks at build time; the libraries tfnf's users
come from (TFP, Keras' older docs, Pyro, zuko) build theirs the same way.

At build time this file (1) copies notebooks/*.ipynb to docs/tutorials/ with the small
parameters the test suite runs them with (notebooks/small_parameters.json), for myst-nb
to execute, and (2) writes docs/concepts/benchmarks_tables.md from the JSON records in
benchmarks/results/, so the site's figures are the records', not copies.
"""

import json
import os
import pathlib
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

project = "tfnf"
author = "the tfnf developers"
copyright = "2026, the tfnf developers"  # noqa: A001 (Sphinx's name)
release = __import__("tfnf").__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_custom_sections = [("Arguments", "params_style"), ("Returns", "returns_style")]
exclude_patterns = ["_build", "concepts/benchmarks_tables.md"]  # included, not a page
autodoc_inherit_docstrings = False  # TFP's and Keras' own docstrings are theirs to render
html_theme = "furo"
html_title = f"tfnf {release}"
nb_execution_mode = os.environ.get("TFNF_DOCS_EXECUTE", "force")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_in_temp = True  # a notebook that writes files writes them in a temporary folder
myst_enable_extensions = ["dollarmath"]


def small_notebooks() -> None:
    """The notebooks with the test suite's small parameters, as docs/tutorials/*.ipynb."""
    import nbformat

    small = json.loads((ROOT / "notebooks" / "small_parameters.json").read_text())
    full = ROOT.parent / "shared" / "data" / "binarized_mnist.npz"  # beside the checkout
    data = full if full.is_file() else ROOT / "tests" / "data" / "binarized_mnist_small.npz"
    small["DATA"] = repr(str(data))
    target = HERE / "tutorials"
    target.mkdir(exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        first = next(cell for cell in notebook.cells if cell.cell_type == "code")
        for name, value in small.items():
            first.source = re.sub(rf"^{name} = .*$", f"{name} = {value}", first.source, flags=re.M)
        nbformat.write(notebook, target / path.name)


small_notebooks()


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return "(nested)"
    return str(value).replace("|", "/")


def benchmark_tables() -> None:
    """docs/concepts/benchmarks_tables.md: each benchmarks/results/*.json as a table of its
    records' scalar fields, newest first, so the page shows what the benchmarks wrote."""
    parts = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        records = json.loads(path.read_text())
        records = records if isinstance(records, list) else [records]
        keys = [k for k in records[-1] if not isinstance(records[-1][k], (dict, list))]
        parts += [f"## `{path.name}`", "", f"{len(records)} records, newest first.", ""]
        parts += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in reversed(records):
            parts.append("| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |")
        parts.append("")
    (HERE / "concepts" / "benchmarks_tables.md").write_text("\n".join(parts))


benchmark_tables()


def _skip_foreign(app, what, name, obj, skip, options):
    """Document tfnf's own members; what a class inherits from TFP or Keras is theirs."""
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and callable(obj) and not module.startswith("tfnf"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign)
