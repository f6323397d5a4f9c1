"""The import graph: stages import only downwards, and the core imports no plugin package and no report module.

Every ``import`` statement is read from the source (function-level lazy imports
included: they are dependencies too), resolved to a module of this project and
given the rank of its stage. A module may import modules of its own rank or a
lower one. Order, lowest first:

    core (registry, specs, runtime, options, generators, results, plotting, ...)
    -> adapters (generators) -> store -> metrics -> benchmarks -> runner -> reports
    -> interface (iqabench.api, the CLI, plugins' ``cli.py`` command modules)

Exceptions are listed in ``ALLOWED`` with the reason; a new one needs a reason too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"iqabench": ROOT / "iqabench", "iqabench.adapters": ROOT / "adapters",
            "iqabench.benchmarks": ROOT / "benchmarks", "iqabench.reports": ROOT / "reports"}
RANKS = [  # (module prefix, rank); the longest matching prefix wins
    ("iqabench", 0),
    ("iqabench.adapters", 1),
    ("iqabench.store", 2), ("iqabench.store_check", 2), ("iqabench.score_shards", 2), ("iqabench.sqlite_tx", 2),
    ("iqabench.metrics", 3),
    ("iqabench.benchmark", 4), ("iqabench.benchmarks", 4),
    ("iqabench.runner", 5), ("iqabench.manifest", 5), ("iqabench.scoring", 5), ("iqabench.batch_autotune", 5),
    ("iqabench.reports", 6),
    # iqabench.errors is the CLI's error boundary (which exceptions are the user's), so it sits with the CLI
    ("iqabench.api", 7), ("iqabench.cli", 7), ("iqabench.errors", 7), ("iqabench.__main__", 7),
    ("iqabench.__init__", 7),
]
INTERFACE_SUFFIX = ".cli"  # a plugin package's command module belongs to the CLI layer
PLUGIN_PACKAGES = ("iqabench.adapters", "iqabench.benchmarks")
ALLOWED = {
    ("iqabench.adapters.guidance.generator", "iqabench.metrics"):
        "gradient guidance steers by a metric: it builds the metric as a loss from the metric registry",
    ("iqabench.adapters.acpo.evaluator_spec", "iqabench.metrics"):
        "ACPO's evaluator (its reward) is a registered differentiable metric, looked up in the metric registry",
    ("iqabench.benchmarks.study.export", "iqabench.runner"):
        "the study kit re-plans finished runs to find their images: it drives the runner as the CLI does",
    ("iqabench.adapters.iqa_adapter.dataset", "iqabench.metrics"):
        "`score-dataset` scores a training set with registered metrics before training",
    ("iqabench.adapters.acpo.metric", "iqabench.metrics"):
        "ACPO's IPCE evaluator is also Table 2's metric: `ipce:<file>` registers itself in the metric registry",
}


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


def test_store_verify_lives_in_its_own_module_and_the_old_import_path_still_works():
    import iqabench.store as store
    import iqabench.store_check as store_check

    assert store.verify_store is store_check.verify_store and store.StoreCheck is store_check.StoreCheck
    assert "def verify_store" not in (ROOT / "iqabench" / "store.py").read_text("utf-8")
