"""``iqabench report``: combine finished runs into one self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DEFAULT_OUT, OutOption, fail, out_console, user_errors


def report_command(
    runs: Annotated[list[str], typer.Argument(help="Run ids (folders under <out>/runs).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file to write (a folder: "
                                                "report.html inside it).")] = None,
    out: OutOption = Path(DEFAULT_OUT),
) -> None:
    """Combine one or more finished runs into one self-contained HTML report."""
    from ..reports import render_report
    from ..reports.render import REPORT_FILE
    from ..store import Store

    if output is not None and output.is_dir():
        output = output / REPORT_FILE  # `-o some/folder` means "put the report there", not "replace the folder"
    try:
        store = Store(out)
        for run_id in runs:
            store.read_run_json(run_id)
        path = render_report(store, list(runs), output)
    except user_errors() as exc:
        fail(exc)
        return
    out_console.print(f"report: {path}", highlight=False, soft_wrap=True)
