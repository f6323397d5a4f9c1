"""The terminal summary after a run: the benchmark's first table, trimmed to fit; the report has everything."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from .common import out_console


def print_summary(result) -> None:
    """The benchmark's first table, trimmed to fit a terminal; the report has everything."""
    if result is None or not result.tables:
        return
    name, table = next(iter(result.tables.items()))
    if table.empty:
        return
    from pandas.api.types import is_numeric_dtype

    labels = [c for c in table.columns if not is_numeric_dtype(table[c]) and c not in ("direction", "baseline")][:3]
    numbers = [c for c in table.columns if is_numeric_dtype(table[c]) and not c.endswith(("_ci_low", "_ci_high"))
               and not c.startswith("n_")][:4]
    shown = Table(title=f"{name} (full tables in the report)")
    for column in labels:
        shown.add_column(escape(str(column)), overflow="fold")
    for column in numbers:
        shown.add_column(escape(str(column)), justify="right")
    for _, row in table.head(30).iterrows():
        cells = [escape(str(row[c])) for c in labels]
        for column in numbers:
            value, low, high = row[column], row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            if low is not None and high is not None:
                text += f" [{low:.3g}, {high:.3g}]"
            cells.append(escape(text))
        shown.add_row(*cells)
    out_console.print(shown)
