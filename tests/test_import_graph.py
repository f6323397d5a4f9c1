"""The import graph: stages import only downwards, and the core imports no plugin package and no report module.

Every ``import`` statement is read from the source (function-level lazy imports
included: they are dependencies too), resolved to a module of this project and
given the rank of its stage. A module may import modules of its own rank or a
lower one. Order, lowest first:

    core (iqabench.contracts, .execution, .io, .analysis, .support)
    -> store (iqabench.store) -> metrics -> adapters (generators) -> benchmarks -> runner (iqabench.engine)
    -> reports
    -> interface (iqabench.api, the CLI, plugins' ``cli.py`` command modules)

Exceptions are listed in ``ALLOWED`` with the reason; a new one needs a reason too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"iqabench": ROOT / "iqabench", "iqabench.adapters": ROOT / "adapters",
            "iqabench.benchmarks": ROOT / "benchmarks", "iqabench.reports": ROOT / "reports"}
RANKS = [  # (module prefix, rank); the longest matching prefix wins. Core subpackages (docs/architecture.md):
    ("iqabench", 0),
    # the core in ordered sub-ranks: the contracts (data types, errors, registries: no torch) at the bottom; io and
    # execution use them; the generator registry/pool and the declared needs build on io/execution (a Runtime, the
    # safe loader, the hub cache), so they rank above those two; the analyses read the result contract; support last
    ("iqabench.contracts", 0.0),
    ("iqabench.execution", 0.1), ("iqabench.io", 0.1),
    ("iqabench.contracts.generators", 0.2), ("iqabench.contracts.needs", 0.2),
    ("iqabench.analysis", 0.3),
    ("iqabench.support", 0.4),
    ("iqabench.store", 1),
    # metrics sit below the generators: gradient guidance, ACPO's evaluator and `score-dataset` build registered
    # metrics, so the generators use the metric layer (while the data flows generators -> store -> metrics)
    ("iqabench.metrics", 2), ("iqabench.metric_catalog", 2),
    ("iqabench.adapters", 3),
    ("iqabench.benchmark", 4), ("iqabench.benchmarks", 4),
    ("iqabench.engine", 5),
    ("iqabench.reports", 6),
    # iqabench.contracts.errors (the error classes) is core; the CLI's error boundary is iqabench.cli.boundary
    ("iqabench.api", 7), ("iqabench.cli", 7), ("iqabench.__main__", 7),
    ("iqabench.__init__", 7),
]
INTERFACE_SUFFIX = ".cli"  # a plugin package's command module belongs to the CLI layer
PLUGIN_PACKAGES = ("iqabench.adapters", "iqabench.benchmarks")
ALLOWED: dict[tuple[str, str], str] = {}


def module_files() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            if package == "iqabench" and parts and parts[0] in ("adapters", "benchmarks", "reports"):
                continue
            name = ".".join([package, *parts])
            out[name + (".__init__" if path.name == "__init__.py" and package == "iqabench" and not parts else "")] \
                = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    here = name.removesuffix(".__init__").split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    for table in lazy_tables(path):  # {name: "module"} given to lazy_exports: imported on first access
        package = here if is_package else here[:-1]
        for text in table:
            if text.startswith("."):
                dots = len(text) - len(text.lstrip("."))
                text = ".".join(package[: len(package) - (dots - 1)] + [text.lstrip(".")])
            found.add(text)
    return {m for m in found if m.startswith("iqabench.")}  # `from iqabench import x`: only x counts


def lazy_tables(path: Path) -> list[list[str]]:
    """The module names of every lazy-export table in a file: a dict literal passed to ``lazy_exports`` or bound to a
    name that is."""
    tree = ast.parse(path.read_text("utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "lazy_exports"]
    names = {a.id for c in calls for a in c.args if isinstance(a, ast.Name)}
    dicts = [a for c in calls for a in c.args if isinstance(a, ast.Dict)]
    dicts += [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict)
              and any(isinstance(t, ast.Name) and t.id in names for t in n.targets)]
    return [[v.value for v in d.values if isinstance(v, ast.Constant) and isinstance(v.value, str)] for d in dicts]


def rank(module: str) -> int:
    if module == "iqabench":  # the package root re-exports the API
        return 7
    if module.startswith(PLUGIN_PACKAGES) and module.endswith(INTERFACE_SUFFIX):
        return 7
    best = max((p for p, _ in RANKS if module == p or module.startswith(p + ".")), key=len)
    return dict(RANKS)[best]


def edges() -> list[tuple[str, str]]:
    files = module_files()
    known = set(files) | {n.removesuffix(".__init__") for n in files}
    out = []
    for name, path in files.items():
        for target in imports_of(name, path):
            if target in known and target != name:
                out.append((name.removesuffix(".__init__"), target))
    return out


def test_the_graph_is_read():
    found = edges()
    assert ("iqabench.benchmarks.relgain", "iqabench.benchmark") in found
    assert ("iqabench.api", "iqabench.reports") in found  # lazy imports count
    assert len(found) > 100


def test_no_stage_imports_a_later_one():
    bad = [f"{a} (rank {rank(a)}) imports {b} (rank {rank(b)})" for a, b in edges()
           if rank(a) < rank(b) and (a, b) not in ALLOWED]
    assert not bad, "imports against the stage order:\n" + "\n".join(sorted(bad))


def test_core_imports_no_plugin_package_and_reports_import_no_benchmark_protocol():
    core = [(a, b) for a, b in edges() if not a.startswith((*PLUGIN_PACKAGES, "iqabench.reports")) and rank(a) < 7
            and b.startswith(PLUGIN_PACKAGES)]  # the interface (iqabench.api's lazy table) re-exports plugins
    assert not core, f"the core imports plugin packages: {core}"
    reports = [(a, b) for a, b in edges() if a.startswith("iqabench.reports")
               and (b == "iqabench.benchmark" or b.startswith(PLUGIN_PACKAGES))]
    assert not reports, f"reports import the benchmark protocol or plugins: {reports}"


def test_allowed_exceptions_are_still_needed():
    found = set(edges())
    stale = [pair for pair in ALLOWED if pair not in found]
    assert not stale, f"remove these from ALLOWED, they no longer happen: {stale}"


def test_store_verify_lives_in_its_own_module():
    import iqabench.store.store as store
    import iqabench.store.store_check as store_check

    assert callable(store_check.verify_store) and not hasattr(store, "verify_store")
    assert "def verify_store" not in (ROOT / "iqabench" / "store" / "store.py").read_text("utf-8")


def test_no_import_circles():
    """Modules that reach each other through imports (lazily or not, through any number of modules) blur which one
    is the lower layer: every strongly connected component of the graph must be a single module."""
    found = set(edges())
    graph: dict[str, set[str]] = {}
    for a, b in found:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    assert not [c for c in strongly_connected(graph) if len(c) > 1], \
        f"modules importing each other: {[sorted(c) for c in strongly_connected(graph) if len(c) > 1]}"


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative: the graph has hundreds of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                out.append(component)
    return out


def test_the_circle_check_finds_long_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(sorted(c) for c in strongly_connected(graph) if len(c) > 1) == [["a", "b", "c"]]


def test_lazy_export_tables_are_edges():
    found = set(edges())
    assert ("iqabench.api", "iqabench.adapters.diffusers_base") in found
    assert ("iqabench.adapters.iqa_adapter", "iqabench.adapters.iqa_adapter.checkpoint") in found


def test_the_contracts_import_no_torch():
    """The contracts are data: ``Execution``, specs, results and errors load without torch (a Runtime is built from
    an Execution by ``Runtime.from_execution`` in the execution layer)."""
    import subprocess
    import sys

    code = ("import sys; import iqabench.contracts.execution, iqabench.contracts.specs, iqabench.contracts.results, "
            "iqabench.contracts.errors, iqabench.contracts.registry; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False"], done.stderr[-2000:]


#: the only modules left directly in iqabench/ (docs/architecture.md says why); the rest of the core lives in
#: the subpackages of RANKS
TOP_LEVEL = {"__init__", "__main__", "api", "benchmark", "metric_catalog"}
SUBPACKAGES = {"contracts", "execution", "io", "analysis", "support", "store", "engine", "cli", "metrics"}


def test_the_core_lives_in_subpackages_that_have_a_rank():
    flat = {p.stem for p in (ROOT / "iqabench").glob("*.py")}
    assert flat == TOP_LEVEL, f"new top-level modules belong in a subpackage: {sorted(flat - TOP_LEVEL)}"
    folders = {p.parent.name for p in (ROOT / "iqabench").glob("*/__init__.py")}
    assert folders == SUBPACKAGES, sorted(folders ^ SUBPACKAGES)
    prefixes = {p for p, _ in RANKS}
    unranked = sorted(f"iqabench.{s}" for s in SUBPACKAGES - {"cli"} if f"iqabench.{s}" not in prefixes)
    assert not unranked, f"subpackages without a rank of their own: {unranked}"
