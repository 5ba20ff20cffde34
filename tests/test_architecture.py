"""The layering of ARCHITECTURE.md, checked on the source: imports point down, private names stay home.

Walks every module of the three packages with ``ast`` (nothing is imported), so a
new upward import or a new reach into another module's ``_private`` name fails here,
and so does an import cycle between ``cluster`` (or ``jobs``) modules, even one hidden in a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("geometry_core", "cluster", "jobs")  # bottom to top


def _modules() -> list[Path]:
    return sorted(p for pkg in LAYERS for p in (REPO / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, me: str) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import in the file of module ``me``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out += _imports_of(node, me, is_package=path.name == "__init__.py")
    return out


def _imports_of(node: ast.ImportFrom, me: str, *, is_package: bool = False) -> list[tuple[str, list[str], int]]:
    """The absolute module of a ``from ... import`` (relative ones resolved against ``me``)."""
    if node.level:
        base = (me if is_package else me.rpartition(".")[0]).split(".")
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [(module, [a.name for a in node.names], node.lineno)]


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def _problems(path: Path, me: str) -> list[str]:
    mine = _layer(me)
    problems = []
    for module, names, line in _imports(path, me):
        theirs = _layer(module)
        if theirs is not None and theirs > mine:
            problems.append(f"line {line}: {me} ({LAYERS[mine]}) imports {module} ({LAYERS[theirs]}), a layer above")
        if theirs is not None and module != me:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"line {line}: {me} imports private {private} from {module}")
    problems += _private_attributes(path, me)
    return problems


def _private_attributes(path: Path, me: str) -> list[str]:
    """``module._name`` where ``module`` is another project module bound by an import."""
    tree = ast.parse(path.read_text(), str(path))
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update({a.asname: a.name for a in node.names if a.asname and _layer(a.name) is not None})
        elif isinstance(node, ast.ImportFrom):
            for module, names, _ in _imports_of(node, me):
                bound.update({n: f"{module}.{n}" for n in names if _layer(module) is not None})
    return [f"line {node.lineno}: {me} uses private {node.attr!r} of {bound[node.value.id]}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
            and node.attr.startswith("_") and not node.attr.startswith("__") and bound[node.value.id] != me]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down_and_private_names_stay_home(path):
    problems = _problems(path, _module_name(path))
    assert not problems, "\n".join(problems)


# Tests may reach a module's private name only as a named seam, each with its reason; a new reach fails.
TEST_SEAMS = {
    ("tests.core.test_distances", "_REGISTRY"): "restores the global distance registry after a registration",
    ("tests.core.test_distances", "_ALIASES"): "restores the global distance aliases after a registration",
    ("tests.cluster.test_weights_identity", "_REGISTRY"): "restores the generator registry after a registration",
    ("tests.core.test_metric", "_jvp_chunk"): "counts the tangent chunks exact computes (memory bound)",
    ("tests.core.test_metric", "_LIVE_COPIES"): "the activation bound's constant, checked against a measurement",
    ("tests.core.test_metric_tensors", "_jvp_chunk"): "counts the tangent chunks of a multi-target pass",
    ("tests.core.test_metric_tensors", "_LIVE_COPIES"): "the activation bound's constant",
    ("tests.core.test_ssim", "_scalar_from_jacobian"): "the general scalar-distance path, as SSIM's reference",
    ("tests.jobs.test_finished_run", "_parse_text"): "counts how often the store location is parsed",
}


def _test_problems(path: Path, me: str) -> list[str]:
    """Private names of project modules that a test module reaches, outside :data:`TEST_SEAMS`."""
    problems = []
    for module, names, line in _imports(path, me):
        if _layer(module) is not None:
            problems += [f"line {line}: {me} imports private {n!r} from {module}" for n in names
                         if n.startswith("_") and not n.startswith("__") and (me, n) not in TEST_SEAMS]
    return problems + [p for p in _private_attributes(path, me)
                       if (me, p.split("private '")[1].split("'")[0]) not in TEST_SEAMS]


@pytest.mark.parametrize("path", sorted((REPO / "tests").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_tests_reach_no_private_name_but_their_named_seams(path):
    problems = _test_problems(path, _module_name(path))
    assert not problems, "\n".join(problems)


def test_the_test_scan_sees_a_private_reach(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("from cluster.lock import _encode\nimport geometry_core.metric as m\nm._jvp_chunk\n")
    problems = _test_problems(bad, "tests.core.test_probe")
    assert len(problems) == 2 and "'_encode' from cluster.lock" in problems[0], problems
    assert not _test_problems(bad, "tests.core.test_metric")[1:]  # a named seam of test_metric


def test_the_checks_see_a_violation(tmp_path):
    """An upward import and a private name are both found (so the test above can fail)."""
    bad = tmp_path / "probe.py"
    bad.write_text("from jobs.cli import main\nfrom .lock import _secret\nimport geometry_core.metric\n"
                   "from . import plots\nplots._pyplot()\n")
    problems = _problems(bad, "cluster.probe")
    assert len(problems) == 3, problems
    assert "jobs.cli (jobs), a layer above" in problems[0] and "private ['_secret'] from cluster.lock" in problems[1]
    assert "uses private '_pyplot' of cluster.plots" in problems[2]


# Tests follow the layers: tests/core reaches geometry_core only, tests/cluster no higher than cluster;
# a test that drives a command lives in tests/jobs. tests/support helpers count as what they import.
TEST_LAYERS = {"core": 0, "cluster": 1, "jobs": 2}


def _support_reach(module: str, seen: set[str] | None = None) -> set[str]:
    """The project modules a tests.support module imports, through the support modules it imports."""
    seen = set() if seen is None else seen
    path = REPO / (module.replace(".", "/") + ".py")
    if module in seen or not path.exists():
        return set()
    seen.add(module)
    out = set()
    for imported, names, _ in _imports(path, module):
        out |= {imported} if _layer(imported) is not None else set()
        if imported.startswith("tests.support"):
            for m in (imported, *(f"{imported}.{n}" for n in names)):
                out |= _support_reach(m, seen)
    return out


def _test_layer_problems(path: Path, me: str, layer: int) -> list[str]:
    """Imports of a test module (direct, or through tests.support) from a package above ``layer``."""
    problems = []
    for module, names, line in _imports(path, me):
        reached = {module} if _layer(module) is not None else set()
        if module.startswith("tests.support"):
            for m in (module, *(f"{module}.{n}" for n in names)):
                reached |= _support_reach(m)
        above = sorted(m for m in reached if _layer(m) > layer)
        if above:
            problems.append(f"line {line}: {me} ({LAYERS[layer]} tests) reaches {', '.join(above)}")
    return problems


@pytest.mark.parametrize("path", sorted(p for d in TEST_LAYERS for p in (REPO / "tests" / d).glob("test_*.py")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_tests_import_nothing_above_their_layer(path):
    problems = _test_layer_problems(path, _module_name(path), TEST_LAYERS[path.parent.name])
    assert not problems, "\n".join(problems)


def test_the_test_layer_check_sees_a_reach_up(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("from jobs.cli import main\nfrom tests.support.stored_runs import write_run\n"
                   "import geometry_core\n")
    problems = _test_layer_problems(bad, "tests.core.test_probe", 0)
    assert len(problems) == 2, problems
    assert "reaches jobs.cli" in problems[0] and "cluster." in problems[1]  # stored_runs writes through cluster
    assert _test_layer_problems(bad, "tests.jobs.test_probe", 2) == []


def _module_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports anywhere in its file (functions included)."""
    paths = {_module_name(p): p for p in _modules() if _module_name(p).split(".")[0] == package}
    graph = {}
    for me, path in paths.items():
        deps = set()
        for module, names, _ in _imports(path, me):
            # `from . import x` names module x; `from .x import y` names module x
            deps |= {m for m in (*(f"{module}.{n}" for n in names), module) if m in paths and m != me}
        graph[me] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another (directly or not), sorted; a DFS per module."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for m in graph.get(todo.pop(), ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    reaches = {m: reach(m) for m in graph}
    groups = {frozenset(n for n in reaches[m] if m in reaches[n]) for m in graph if m in reaches[m]}
    return sorted(sorted(g) for g in groups)


@pytest.mark.parametrize("package", ["cluster", "jobs"])
def test_no_import_cycle_between_modules(package):
    """A function-level import can hide a cycle that a module-level one would reveal; neither is allowed.

    (geometry_core is left out: its generator registry and catalogue import each other on purpose.)
    """
    cycles = _cycles(_module_graph(package))
    assert not cycles, f"{package} modules importing one another: {cycles}"


def test_the_cycle_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
