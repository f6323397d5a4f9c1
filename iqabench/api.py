"""The public API: run the pipeline in one call, and everything a generator, metric or benchmark plugin needs.

This is the top layer: :class:`~iqabench.engine.runner.Runner` stops at a
:class:`~iqabench.contracts.results.Result`; :func:`execute` hands it to ``reports``
(imported here, lazily, and nowhere below). ``iqabench run`` and
``iqabench.run`` both come through :func:`execute`.

Plugins import from here only (examples in docs/plugins.md)::

    from iqabench.api import DiffusersGenerator, register_generator   # a generator
    from iqabench.api import register_metric                          # a metric
    from iqabench.api import BaseBenchmark, PlannedItem, Result, register_benchmark  # a benchmark
    from iqabench.api import Need, UserInputError, declare, run_batched  # files, errors, batched passes

``DiffusersGenerator``, ``QualityGenerator`` and the option dataclasses live in
the generator plugin package; they are loaded on first access, so
``import iqabench`` still loads no plugin package.
"""

from __future__ import annotations

import os
from typing import Any

from .benchmark import AnalysisContext, BaseBenchmark, PlannedItem, register_benchmark
from .contracts.execution import Execution
from .contracts.generators import GeneratorPool, WeightsMissingError, WorkItem, build_generator, register_generator
from .contracts.options import Options, flag, integer, number, option, text
from .contracts.results import ImageRef, Result
from .contracts.specs import GeneratorSpec, RunSpec, SpecError
from .engine.runner import Runner, RunOutcome
from .execution.runtime import Runtime
from .metrics import build_metric, metric_info, register_metric
from .store.store import Store
from .support.lazy import lazy_exports

#: Names loaded on first access (PEP 562), not at ``import iqabench``: the generator plugin package's bases and
#: options, and what a plugin raises (``UserError``), declares (``Need``, ``declare``) and batches with
#: (``run_batched``, ``BatchPolicy``).
_LAZY = {
    "UserError": "iqabench.contracts.errors",
    "UserInputError": "iqabench.contracts.errors",
    "Need": "iqabench.contracts.needs",
    "declare": "iqabench.contracts.needs",
    "run_batched": "iqabench.execution.batching",
    "BatchPolicy": "iqabench.execution.batching",
    "DiffusersGenerator": "iqabench.adapters.diffusers_base",
    "QualityGenerator": "iqabench.adapters.quality_base",
    "GenerationOptions": "iqabench.adapters.generator_options",
    "HubOptions": "iqabench.adapters.generator_options",
    "TinyOptions": "iqabench.adapters.generator_options",
    "tiny_sd_pipeline": "iqabench.support.tiny_models",
    "tiny_sdxl_pipeline": "iqabench.support.tiny_models",
}

__all__ = [
    "AnalysisContext", "BaseBenchmark", "Execution", "GeneratorPool", "GeneratorSpec", "ImageRef", "Options",
    "PlannedItem", "Result", "RunOutcome", "RunSpec", "Runner", "Runtime", "SpecError", "Store",
    "WeightsMissingError", "WorkItem", "build_generator", "build_metric", "execute", "flag", "integer",
    "metric_info", "number", "option", "register_benchmark", "register_generator", "register_metric", "run", "text",
    *_LAZY,
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


def execute(runner: Runner, *, dry_run: bool = False, report: bool = True) -> RunOutcome:
    """Run ``runner``'s stages; on the main process, save the Result, mark the run complete, render the report.

    SIGTERM (scancel, ``docker stop``) is turned into an interrupt meanwhile, so run.json says ``interrupted``.
    """
    from .engine.run_status import sigterm_interrupts

    with sigterm_interrupts():
        return _execute(runner, dry_run=dry_run, report=report)


def _execute(runner: Runner, *, dry_run: bool, report: bool) -> RunOutcome:
    try:
        try:
            outcome = runner.execute(dry_run=dry_run, hold_run_id=True)  # held through the final writes below
        except BaseException as exc:  # KeyboardInterrupt and SystemExit too: the run must not stay "running"
            _record_end(runner, exc)
            raise
        if outcome.unchanged:
            return _unchanged(runner, outcome)
        if outcome.result is None:  # dry run, or a worker process of a distributed run
            return outcome
        return _finish(runner, outcome, report=report)
    finally:
        runner.release_run_id()


def _unchanged(runner: Runner, outcome: RunOutcome) -> RunOutcome:
    """A resume whose analysis would read what the finished run's did: its saved result and report stand; only
    run.json is written back (it said "running" while the run checked its images and scores)."""
    from .reports.persist import load_result

    try:
        outcome.result = load_result(runner.store, runner.run_id)
    except (OSError, ValueError):  # the saved result was damaged since: analyse again, as a changed run would
        return _finish(runner, runner.analyse_into(outcome), report=True)
    outcome.report = runner.store.run_dir(runner.run_id) / "report.html"
    runner.store.write_run_json(runner.run_id, runner.manifest("complete", outcome.plan, failures=outcome.failures,
                                                               analysis_inputs=outcome.analysis_inputs))
    return outcome


def _finish(runner: Runner, outcome: RunOutcome, *, report: bool) -> RunOutcome:
    """Save the Result, mark the run complete or incomplete, render its report."""
    from . import reports

    stage = "saving the results"
    try:
        with runner.clock.stage("report"):  # the report: its fixed cost (perf/overhead_stages.py)
            reports.save_result(runner.store, runner.run_id, outcome.result)
            status = "complete" if outcome.complete else "incomplete"  # incomplete: images or scores missing
            # the analysis inputs are recorded only once the report shows them: a render that was killed or
            # skipped (report=False) must not let a later resume keep an older report as "unchanged"
            manifest = runner.manifest(status, outcome.plan, failures=outcome.failures)
            runner.store.write_run_json(runner.run_id, manifest)
            if report:
                stage = "rendering the report"
                outcome.report = reports.render_report(runner.store, [runner.run_id])
                runner.store.write_run_json(runner.run_id, {**manifest, "analysis_inputs": outcome.analysis_inputs})
    except Exception as exc:
        # without this the run stays "running" in run.json (and in `iqabench list runs`) forever; the exception
        # still propagates, so the CLI exits non-zero with its sentence
        error = f"{stage[0].upper()}{stage[1:]} failed: {type(exc).__name__}: {exc}"
        runner.store.write_run_json(runner.run_id, runner.manifest("failed", outcome.plan, failures=outcome.failures,
                                                                   error=error))
        raise
    return outcome


def _record_end(runner: Runner, exc: BaseException) -> None:
    """run.json of a run this process started says ``interrupted`` (Ctrl-C, a signal) or ``failed`` (an error,
    an exit), with the reason, instead of staying ``running``."""
    if not runner.is_main_process:
        return
    try:
        current = runner.store.read_run_json(runner.run_id)
    except (OSError, ValueError):
        return
    if current.get("status") != "running" or (current.get("owner") or {}).get("pid") != os.getpid():
        return  # not started by this process (a dry run, or the error came before the run began)
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    try:
        manifest = runner.manifest(status, None, error=reason, owner=current.get("owner"))
        manifest["plan"] = current.get("plan")
        runner.store.write_run_json(runner.run_id, manifest)
    except Exception as failure:  # recording must never hide the original error; it says it could not record
        exc.add_note(f"iqabench could not mark run {runner.run_id} {status}: {type(failure).__name__}: {failure}")


def run(spec: RunSpec, out: str | os.PathLike[str] = "iqabench_out", **kwargs: Any) -> RunOutcome:
    """One call does what ``iqabench run`` does: ``run(RunSpec("relgain", ["tiny-sd"]), out="out")``.

    ``execution=Execution(device="cuda", batch_size="auto", compile=True)`` says how it runs (not part of the
    run id); other keyword arguments go to :class:`~iqabench.engine.runner.Runner` too.
    """
    dry_run = kwargs.pop("dry_run", False)
    report = kwargs.pop("report", True)
    return execute(Runner(spec, out, **kwargs), dry_run=dry_run, report=report)
