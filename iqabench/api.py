"""The whole pipeline in one call: run a benchmark, persist its Result, render the HTML report.

This is the top layer: :class:`~iqabench.runner.Runner` stops at a
:class:`~iqabench.results.Result`; this module hands it to ``reports`` (imported
here, lazily, and nowhere below). ``iqabench run`` and ``iqabench.run`` both
come through :func:`execute`.
"""

from __future__ import annotations

import os
from typing import Any

from .runner import Runner, RunOutcome
from .specs import RunSpec


def execute(runner: Runner, *, dry_run: bool = False, report: bool = True) -> RunOutcome:
    """Run ``runner``'s stages; on the main process, save the Result, mark the run complete, render the report."""
    outcome = runner.execute(dry_run=dry_run)
    if outcome.result is None:  # dry run, or a worker process of a distributed run
        return outcome
    from .reports import render_report, save_result

    save_result(runner.store, runner.run_id, outcome.result)
    status = "complete" if outcome.complete else "incomplete"  # incomplete: images or scores missing
    runner.store.write_run_json(runner.run_id, runner.manifest(status, outcome.plan, failures=outcome.failures))
    if report:
        outcome.report = render_report(runner.store, [runner.run_id])
    return outcome


def run(spec: RunSpec, out: str | os.PathLike[str] = "iqabench_out", **kwargs: Any) -> RunOutcome:
    """One call does what ``iqabench run`` does: ``run(RunSpec("relgain", ["tiny-sd"]), out="out")``."""
    dry_run = kwargs.pop("dry_run", False)
    report = kwargs.pop("report", True)
    return execute(Runner(spec, out, **kwargs), dry_run=dry_run, report=report)
