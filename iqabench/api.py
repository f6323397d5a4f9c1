"""The public API: run the pipeline in one call, and everything a generator, metric or benchmark plugin needs.

This is the top layer: :class:`~iqabench.runner.Runner` stops at a
:class:`~iqabench.results.Result`; :func:`execute` hands it to ``reports``
(imported here, lazily, and nowhere below). ``iqabench run`` and
``iqabench.run`` both come through :func:`execute`.

Plugins import from here only (examples in docs/plugins.md)::

    from iqabench.api import DiffusersGenerator, register_generator   # a generator
    from iqabench.api import register_metric                          # a metric
    from iqabench.api import BaseBenchmark, PlannedItem, Result, register_benchmark  # a benchmark

``DiffusersGenerator``, ``QualityGenerator`` and the option dataclasses live in
the generator plugin package; they are loaded on first access, so
``import iqabench`` still loads no plugin package.
"""

from __future__ import annotations

import os
from typing import Any

from .benchmark import AnalysisContext, BaseBenchmark, PlannedItem, register_benchmark
from .generators import GeneratorPool, WeightsMissingError, WorkItem, build_generator, register_generator
from .metrics import build_metric, metric_info, register_metric
from .options import Options, option
from .results import ImageRef, Result
from .runner import Runner, RunOutcome
from .runtime import Runtime
from .specs import GeneratorSpec, RunSpec, SpecError
from .store import Store

#: Names loaded from the generator plugin package on first access (PEP 562), not at ``import iqabench``.
_LAZY = {
    "DiffusersGenerator": "iqabench.adapters.diffusers_base",
    "QualityGenerator": "iqabench.adapters.quality_base",
    "GenerationOptions": "iqabench.adapters.generator_options",
    "HubOptions": "iqabench.adapters.generator_options",
    "TinyOptions": "iqabench.adapters.generator_options",
    "tiny_sd_pipeline": "iqabench.tiny_models",
    "tiny_sdxl_pipeline": "iqabench.tiny_models",
}

__all__ = [
    "AnalysisContext", "BaseBenchmark", "GeneratorPool", "GeneratorSpec", "ImageRef", "Options", "PlannedItem",
    "Result", "RunOutcome", "RunSpec", "Runner", "Runtime", "SpecError", "Store", "WeightsMissingError", "WorkItem",
    "build_generator", "build_metric", "execute", "metric_info", "option", "register_benchmark", "register_generator",
    "register_metric", "run", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iqabench.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def execute(runner: Runner, *, dry_run: bool = False, report: bool = True) -> RunOutcome:
    """Run ``runner``'s stages; on the main process, save the Result, mark the run complete, render the report."""
    outcome = runner.execute(dry_run=dry_run)
    if outcome.result is None:  # dry run, or a worker process of a distributed run
        return outcome
    from . import reports

    stage = "saving the results"
    try:
        with runner.clock.stage("report"):  # the report: its fixed cost (perf/overhead_stages.py)
            reports.save_result(runner.store, runner.run_id, outcome.result)
            status = "complete" if outcome.complete else "incomplete"  # incomplete: images or scores missing
            runner.store.write_run_json(runner.run_id, runner.manifest(status, outcome.plan,
                                                                       failures=outcome.failures))
            if report:
                stage = "rendering the report"
                outcome.report = reports.render_report(runner.store, [runner.run_id])
    except Exception as exc:
        # without this the run stays "running" in run.json (and in `iqabench list runs`) forever; the exception
        # still propagates, so the CLI exits non-zero with its sentence
        error = f"{stage[0].upper()}{stage[1:]} failed: {type(exc).__name__}: {exc}"
        runner.store.write_run_json(runner.run_id, runner.manifest("failed", outcome.plan, failures=outcome.failures,
                                                                   error=error))
        raise
    return outcome


def run(spec: RunSpec, out: str | os.PathLike[str] = "iqabench_out", **kwargs: Any) -> RunOutcome:
    """One call does what ``iqabench run`` does: ``run(RunSpec("relgain", ["tiny-sd"]), out="out")``."""
    dry_run = kwargs.pop("dry_run", False)
    report = kwargs.pop("report", True)
    return execute(Runner(spec, out, **kwargs), dry_run=dry_run, report=report)
