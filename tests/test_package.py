"""The package's shape: imports run downhill only, and every public name has one home."""

import ast
import importlib
import inspect
import os
from pathlib import Path

import pytest

import tfnf

ROOT = Path(tfnf.__file__).resolve().parent
# Packages gather their modules' names; the deprecated tfnf.vae re-exports for one release.
GATHERERS = {"tfnf", "tfnf.bijectors", "tfnf.models", "tfnf.vae"}


def module_files() -> dict:
    """{dotted module name: path} for every module of the package."""
    files = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def import_time_imports(path: Path, known: set) -> set:
    """The tfnf modules that a module imports when it is itself imported.

    Only statements that run at import count: the module's top level, including
    `if` and `try` blocks there, not the bodies of functions and classes.
    """
    found, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.If, ast.Try)):
            todo += [
                *node.body,
                *node.orelse,
                *getattr(node, "finalbody", []),
                *[n for handler in getattr(node, "handlers", []) for n in handler.body],
            ]
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            names = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found |= names or {node.module}
    return found


def cycle(graph: dict):
    """A list of modules that import one another in a circle, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_the_cycle_finder_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_one_that_imports_it_back():
    files = module_files()
    graph = {name: import_time_imports(path, set(files)) for name, path in files.items()}
    assert graph["tfnf.models.vae"] >= {
        "tfnf.models.training",
        "tfnf.layers",
    }  # the parser sees imports
    assert cycle(graph) is None, " -> ".join(cycle(graph))
    # Nothing below the top imports the top package's own names, which import everything.
    assert not [name for name, imports in graph.items() if "tfnf" in imports]


def public_modules() -> list:
    return [
        name for name in module_files() if not any(part.startswith("_") for part in name.split("."))
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_public_name_has_one_home_and_no_two_classes_share_a_name():
    homes, classes = {}, {}
    for name in public_modules():
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        for public in module.__all__:
            value = getattr(module, public)  # every listed name resolves
            defined_in = getattr(value, "__module__", None)
            if not (
                inspect.isclass(value) or inspect.isfunction(value)
            ) or not defined_in.startswith("tfnf"):
                continue
            if name not in GATHERERS:
                assert defined_in == name, f"{name} lists {public}, which lives in {defined_in}"
            homes.setdefault(id(value), set()).add(defined_in)
            if inspect.isclass(value):
                classes.setdefault(value.__name__, set()).add(value)
    assert all(len(where) == 1 for where in homes.values())
    shared = {name: owners for name, owners in classes.items() if len(owners) > 1}
    assert not shared, f"public classes sharing a name: {shared}"
    assert {"PlanarFlow", "PlanarStack", "NormalizingFlow", "FlowVAE"} <= set(classes)


def test_benchmark_records_name_the_cpu_and_its_vector_width():
    # Records said "x86_64, 2 cores" on machines that differ twofold in speed.
    from tfnf import _machine

    zen3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
    zen3 += "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 sha_ni\nprocessor\t: 1\n"
    assert _machine.cpu(zen3) == "AMD EPYC (family 25, model 1; AVX2)"
    xeon = "cpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
    xeon += "flags\t\t: avx avx2 avx512f avx512bw\n"
    assert _machine.cpu(xeon) == "Intel(R) Xeon(R) Platinum 8488C (family 6, model 143; AVX-512)"
    graviton = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU part\t: 0xd40\n"
    assert _machine.cpu(graviton).endswith("(NEON)")
    text = _machine.machine()
    assert f", {os.cpu_count()} cores, TF " in text and _machine.cpu() in text


@pytest.mark.xdist_group("site")
def test_xdist_groups_keep_their_tests_on_one_worker(request):
    # pytest-xdist's loadgroup sends a group's tests to one worker by renaming them
    # ("...@site"); where a pytest release stops reading that name, the groups split and
    # every worker builds the documentation site (pyproject.toml pins pytest for this).
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not distributed by group (README's command runs with --dist loadgroup)")
    assert request.node.nodeid.endswith("@site"), request.node.nodeid
