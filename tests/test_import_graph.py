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
    ("iqabench.contracts", 0), ("iqabench.execution", 0), ("iqabench.io", 0), ("iqabench.analysis", 0),
    ("iqabench.support", 0),
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
    return {m for m in found if m.startswith("iqabench.")}  # `from iqabench import x`: only x counts


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
    core = [(a, b) for a, b in edges() if not a.startswith((*PLUGIN_PACKAGES, "iqabench.reports"))
            and b.startswith(PLUGIN_PACKAGES)]
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
    """Two modules that import each other (lazily or not) blur which one is the lower layer."""
    found = set(edges())
    circles = sorted({tuple(sorted(pair)) for pair in found if (pair[1], pair[0]) in found})
    assert not circles, f"modules importing each other: {circles}"


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
