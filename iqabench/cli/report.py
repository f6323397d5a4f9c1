"""``iqabench report``: one or more finished runs in one self-contained HTML page; several runs are compared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DEFAULT_OUT, OutOption, out_console


def report_command(
    runs: Annotated[list[str], typer.Argument(help="Run ids (folders under <out>/runs) or run folders.")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="HTML file to write, or a folder for report.html in it (default: a new file "
                                 "under <out>/reports/).")] = None,
    out: OutOption = Path(DEFAULT_OUT),
) -> None:
    """Report on finished runs; with several, compare them: merged table with CIs and paired differences.

    Never writes into a run's folder: by default a new file
    <out>/reports/compare-<ids>-<time>.html is written and its path printed.
    """
    from ..reports.compare import render_comparison, resolve_run
    from ..reports.render import REPORT_FILE
    from ..store.atomic_io import refuse_file_in_path

    if output is not None and output.is_dir():
        output = output / REPORT_FILE  # `-o some/folder` means "put the report there", not "replace the folder"
    if output is not None:
        refuse_file_in_path(output)
    refs = [resolve_run(text, Path(out)) for text in runs]
    path = render_comparison(refs, output)
    out_console.print(f"report: {path}", highlight=False, soft_wrap=True)
