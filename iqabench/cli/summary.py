"""The terminal summary after a run: the same headline grid as the report (estimates with CIs), fit to the terminal.

The grid is the report's (:func:`iqabench.reports.headline.headline`), so the
terminal and the HTML never disagree. It prints as a generators x metrics table
when that fits the terminal width, and otherwise as one line per (generator,
metric) -- at 80 columns GenEval's seven scores with CIs cannot sit side by side
without wrapping letter by letter. Without a headline, the first table's label
columns (generator included) and first numbers are shown.
"""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from .common import out_console

BEST_MARK = " *"


def _grid(head) -> tuple[list[str], list[str], list[list[str]]]:
    from ..reports.headline import best_mask, cell_text

    best = best_mask(head)
    rows = [str(r) for r in head.estimate.index]
    columns = [str(c) for c in head.estimate.columns]
    cells = [[cell_text(head, i, j) + (BEST_MARK if best.iat[i, j] else "") for j in range(len(columns))]
             for i in range(len(rows))]
    return rows, columns, cells


def print_headline(head, width: int | None = None) -> None:
    rows, columns, cells = _grid(head)
    width = width or out_console.width
    row_key = str(head.estimate.index.name or "")
    needed = max(len(r) for r in rows) + sum(max(len(c), *(len(row[j]) for row in cells)) + 3
                                             for j, c in enumerate(columns)) + 4
    title = f"{head.quantity} (from table {head.source}; full tables in the report)"
    if needed <= width:
        table = Table(title=escape(title), box=box.SIMPLE_HEAD)
        table.add_column(escape(row_key), overflow="fold")
        for column in columns:
            table.add_column(escape(column), justify="right", no_wrap=True)
        for name, row in zip(rows, cells, strict=True):
            table.add_row(escape(name), *(escape(c) for c in row))
    else:
        table = Table(title=escape(title), box=box.SIMPLE_HEAD)
        table.add_column(escape(row_key), overflow="fold", ratio=1)
        table.add_column("column", overflow="fold")
        table.add_column("estimate [95% CI]", justify="right", no_wrap=True)
        for name, row in zip(rows, cells, strict=True):
            for k, (column, text) in enumerate(zip(columns, row, strict=True)):
                table.add_row(escape(name) if k == 0 else "", escape(column), escape(text),
                              end_section=k == len(columns) - 1)
    out_console.print(table)
    from ..reports.headline import legend

    notes = [n for n in (legend(head).replace("bold", "*"), head.footnote) if n]
    for note in notes:
        out_console.print(escape(note), highlight=False, style="dim")


def print_summary(result) -> None:
    """The run's headline grid (or its first table, trimmed) on the terminal; the report has everything.

    A blank cell because both sides of a comparison made the same pixels says why right under the grid
    (issue 25: the notes of :mod:`iqabench.analysis.identical`), not only in the report; so does a baseline
    that is not plainly "CFG off" (FLUX-dev's embedded guidance 1.0)."""
    if result is None or not result.tables:
        return
    _print_table(result)
    from ..analysis.identical import NOT_A_ZERO

    for note in result.notes:
        if NOT_A_ZERO in note:
            out_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    # a baseline that is not plainly "CFG off" (FLUX-dev: embedded guidance 1.0) is said where the numbers are
    for note in (result.summary or {}).get("baseline_notes", []):
        out_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def _print_table(result) -> None:
    from ..reports.headline import headline

    head = headline(result)
    if head is not None:
        print_headline(head)
        return
    name, table = next(iter(result.tables.items()))
    if table.empty:
        return
    from pandas.api.types import is_numeric_dtype

    from ..reports.tables import display_frame

    shown = display_frame(table.head(30))
    flat = table.reset_index() if table.index.name is not None else table
    labels = [c for c in shown.columns if c in flat and not is_numeric_dtype(flat[c])][:3]
    numbers = [c for c in shown.columns if c not in labels and not str(c).startswith("n_")][:4]
    out = Table(title=f"{escape(name)} (full tables in the report)", box=box.SIMPLE_HEAD)
    for column in labels:
        out.add_column(escape(str(column)), overflow="fold")
    for column in numbers:
        out.add_column(escape(str(column)), justify="right", overflow="fold")
    for _, row in shown.iterrows():
        out.add_row(*(escape(str(row[c])) for c in labels + numbers))
    out_console.print(out)
