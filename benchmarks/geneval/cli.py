"""``iqabench geneval-summary``, mounted through the ``iqabench.cli`` entry-point group (see pyproject.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from iqabench.cli.common import out_console


def geneval_summary_command(
    results: Annotated[Path, typer.Argument(help="A results.jsonl from GenEval's evaluate_images.py or ours.")],
) -> None:
    """Summarise a GenEval results file as the official summary_scores.py does (task, overall, prompts)."""
    from .layout import read_results_jsonl
    from .rules import summarize

    if not results.is_file():
        raise FileNotFoundError(f"no GenEval results file at {results}")
    summary = summarize(read_results_jsonl(results))
    table = Table("task", "correct", "images", "accuracy", title=f"GenEval: {escape(str(results))}")
    for tag, accuracy in summary.tasks.items():
        correct, total = summary.task_counts[tag]
        table.add_row(escape(tag), str(correct), str(total), f"{accuracy:.2%}")
    out_console.print(table)
    out_console.print(f"overall score (mean of task accuracies): {summary.overall:.5f}", highlight=False)
    out_console.print(f"correct images: {summary.correct_images:.2%} of {summary.n_images}; correct prompts: "
                      f"{summary.correct_prompts:.2%} of {summary.n_prompts}", highlight=False)


def mount(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Entry point of the ``iqabench.cli`` group: adds ``geneval-summary`` and, for the FID half of the GenEval / FID
    benchmarks (docs/geneval_fid.md), ``fid-stats build``."""
    from ..fid_topk.cli import mount as mount_fid_stats

    app.command("geneval-summary")(geneval_summary_command)
    mount_fid_stats(app, groups)
