"""Turning DataFrames and summary values into report cells.

Every number in the report goes through ``iqabench.analysis.number_format`` (``format_number``,
``format_ci``) so the same value reads the same in tables, figures and exports. A
confidence interval is shown next to its point estimate: columns ``X``,
``X_ci_low``, ``X_ci_high`` become one column ``X`` reading ``X [low, high]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from iqabench.analysis.number_format import MISSING, format_ci, format_number, is_number
from iqabench.analysis.stats import CI_LEVEL_TEXT
from iqabench.contracts.results import Table

__all__ = ["MISSING", "Cell", "TableView", "format_ci", "format_number", "table_view"]

CI_LOW, CI_HIGH = "_ci_low", "_ci_high"


@dataclass(frozen=True)
class Cell:
    text: str
    sort_key: str  # numeric text for numbers (sorted as numbers by the page script), else the text
    numeric: bool
    header: bool = False  # a row label (index column)


@dataclass(frozen=True)
class TableView:
    columns: list[str]
    rows: list[list[Cell]]
    total_rows: int = 0  # rows in the full table when ``rows`` holds only the first ones (0: rows is all)


def _is_number(value: Any) -> bool:
    return is_number(value)


def _cell(value: Any, header: bool = False) -> Cell:
    if _is_number(value) and not (isinstance(value, float) and math.isnan(value)):
        return Cell(format_number(value), repr(float(value)), True, header)
    text = format_number(value) if value is None or _is_number(value) else str(value)
    return Cell(text, text, False, header)


def _ci_cell(value: Any, low: Any, high: Any) -> Cell:
    if not _is_number(value) or math.isnan(float(value)):
        return _cell(value)
    return Cell(format_ci(value, low, high), repr(float(value)), True)


def ci_columns(columns: list[str]) -> dict[str, tuple[str, str]]:
    """Map each column that has both CI companions to (low column, high column)."""
    present = set(columns)
    return {
        col: (col + CI_LOW, col + CI_HIGH) for col in columns if col + CI_LOW in present and col + CI_HIGH in present
    }


def has_row_labels(frame: pd.DataFrame) -> bool:
    """Whether the index carries labels worth showing: named, or not integers.

    An unnamed integer index is what is left after sorting or filtering a
    frame with the default index (e.g. ``value_counts().reset_index()`` then
    ``sort_values``); showing it adds a meaningless "index" column.
    """
    if frame.index.nlevels > 1 or any(name is not None for name in frame.index.names):
        return True
    return not pd.api.types.is_integer_dtype(frame.index.dtype)


def table_view(frame: pd.DataFrame, max_rows: int | None = None, info: Table | None = None,
               labels: dict[str, str] | None = None) -> TableView:
    """Rows of formatted cells; a labelled index becomes leading row-header columns.

    ``max_rows`` keeps only the first rows (a paper-scale per-item table has millions; the CSV keeps them all)
    and records the full count in ``total_rows``. ``info`` (the typed Table) supplies the marks: " n.s." on an
    effect cell whose Holm-adjusted p-value column says not significant, and "too few ... for a 95% CI" in
    place of the brackets of a row resting on fewer than MIN_UNITS units. ``labels`` maps text cells (generator
    specs) to the short labels the page uses (``iqabench.analysis.labels.generator_aliases``); the page's legend table
    gives the full specs.
    """
    labels = {k: v for k, v in (labels or {}).items() if k != v}
    total = len(frame)
    info = info if info is not None and info.frame is frame else None
    effects = dict(info.effects) if info is not None else {}
    significant = {c: info.significant(c) for c in effects if info.effects[c] in frame} if info else {}
    few = info.too_few_units() if info is not None else [False] * total
    plural = "prompts" if info is None or info.unit in ("", "prompt") else info.unit + "s"
    if max_rows is not None and total > max_rows:
        frame = frame.iloc[:max_rows]
    index_levels = 0
    if has_row_labels(frame):
        index_levels = frame.index.nlevels
        frame = frame.reset_index()
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    cis = ci_columns(columns)
    hidden = {c for pair in cis.values() for c in pair}
    shown = [c for c in columns if c not in hidden]
    rows = []
    for r, record in enumerate(frame.to_dict("records")):
        row = []
        for position, col in enumerate(shown):
            if col in cis:
                low, high = cis[col]
                cell = _ci_cell(record[col], *((float("nan"),) * 2 if few[r] else (record[low], record[high])))
                if few[r] and cell.numeric:
                    cell = replace(cell, text=cell.text + f" (too few {plural} for a {CI_LEVEL_TEXT} CI)")
                if col in significant and cell.numeric and not significant[col][r]:
                    cell = replace(cell, text=cell.text + " n.s.")
                row.append(cell)
            else:
                cell = _cell(record[col], header=position < index_levels)
                if not cell.numeric and cell.text in labels:
                    cell = replace(cell, text=labels[cell.text], sort_key=labels[cell.text])
                row.append(cell)
        rows.append(row)
    headers = [labels.get(c, c) for c in shown]  # a matrix's columns can be generators (study: conditions)
    return TableView(headers, rows, total if total > len(rows) else 0)


# --- exports: the same formatted cells as the report, for LaTeX, Markdown and the terminal ----------------------

# DataFrame.attrs key: the columns (after CI merging: "X" stands for "X [low, high]") a .tex export keeps, so a
# wide table fits the page at a readable size instead of shrinking to it; the CSV keeps every column
LATEX_COLUMNS_ATTR = "latex_columns"


def footnote(table: Table | pd.DataFrame) -> str:
    """The table's footnote (``Table.footnote``), or a generic one for a table with CI columns."""
    frame = table.frame if isinstance(table, Table) else table
    note = table.footnote if isinstance(table, Table) else ""
    if not note and ci_columns([str(c) for c in frame.columns]):
        note = "Brackets: 95% confidence interval."
    return note


GENERATOR_COLUMNS = ("generator", "vs_generator", "baseline", "method", "source", "condition")


def frame_aliases(frame: pd.DataFrame) -> dict[str, str]:
    """Short labels for the generator specs a table holds (columns/index levels named in ``GENERATOR_COLUMNS``):
    what an export prints instead of a local path."""
    from iqabench.analysis.labels import generator_aliases

    flat = frame.reset_index() if has_row_labels(frame) else frame
    values = [str(v) for c in flat.columns if str(c) in GENERATOR_COLUMNS for v in flat[c].dropna().unique()]
    return generator_aliases(values)


def display_frame(frame: pd.DataFrame, max_rows: int | None = None, info: Table | None = None) -> pd.DataFrame:
    """Strings as the report shows them: index as leading columns, ``X [low, high]`` for each CI'd column (with
    the typed Table's marks), generator specs as their short labels."""
    view = table_view(frame, max_rows, info, labels=frame_aliases(frame))
    return pd.DataFrame([[cell.text for cell in row] for row in view.rows], columns=view.columns)


def _numeric_columns(frame: pd.DataFrame, shown: list[str]) -> set[str]:
    flat = frame.reset_index() if has_row_labels(frame) else frame
    flat = flat.set_axis([str(c) for c in flat.columns], axis=1)
    return {c for c in shown if c in flat and pd.api.types.is_numeric_dtype(flat[c])}


def _metric_names(columns: list[str]) -> set[str]:
    """Columns named after a registered metric: their headers stay as written (``topiq_nr``, not "topiq nr")."""
    try:
        from iqabench.metrics import metric_info
    except ImportError:  # pragma: no cover
        return set()
    names = set()
    for column in columns:
        try:
            metric_info(column)
        except Exception:  # not a metric name
            continue
        names.add(column)
    return names


def to_latex(frame: pd.DataFrame, name: str, note: str = "", run: str = "", info: Table | None = None) -> str:
    """A booktabs ``table`` that pastes into a paper unchanged and fits ``\\linewidth`` (see reports/latex.py).

    Cells are the report's formatted strings; numeric columns are right-aligned; the footnote (how the CIs were
    computed) becomes the caption; the label is ``tab:<run>-<name>``, unique per run and table. Needs
    ``booktabs`` and ``graphicx``.
    """
    from .latex import label, latex_table

    shown = display_frame(frame, info=info)
    numeric = _numeric_columns(frame, list(shown.columns))
    caption = name.replace("_", " ") + (f". {note}" if note else "")
    chosen = [str(c) for c in frame.attrs.get(LATEX_COLUMNS_ATTR, ()) if str(c) in shown.columns]
    if chosen and len(chosen) < len(shown.columns):  # the table's own choice of what a paper prints
        shown = shown[chosen]
        caption = caption.rstrip().rstrip(".") + f". Other columns: {name}.csv."
    return latex_table(shown, caption=caption, tag=label(run, name), numeric=numeric,
                       raw_headers=_metric_names(list(shown.columns)))


def latex_escape(text: str) -> str:
    """LaTeX-escape free text (captions) the way pandas' Styler escapes cells (``escape="latex"``): covers
    ``# $ % & _ { } ~ ^`` and backslashes. Styler.to_latex does not escape its ``caption`` argument itself."""
    from pandas.io.formats.style_render import _escape_latex

    return _escape_latex(text)


def to_markdown(frame: pd.DataFrame, note: str = "", info: Table | None = None) -> str:
    """A GitHub-flavoured Markdown table (via pandas/tabulate) with the footnote under it."""
    shown = display_frame(frame, info=info)
    numeric = _numeric_columns(frame, list(shown.columns))
    shown = shown.map(lambda text: text.replace("|", "\\|")).set_axis([c.replace("|", "\\|") for c in shown.columns],
                                                                       axis=1)
    align = ["right" if c in numeric else "left" for c in shown.columns]
    if not len(shown.columns):
        text = ""
    else:
        try:
            text = shown.to_markdown(index=False, colalign=align, disable_numparse=True)
        except ImportError:  # tabulate is an optional pandas dependency: never let it kill a finished run
            text = _plain_markdown(shown, align)
    return text + (f"\n\n{note}\n" if note else "\n")


def _plain_markdown(shown: pd.DataFrame, align: list[str]) -> str:
    """A minimal GFM pipe table of already-formatted, ``|``-escaped strings (the fallback without tabulate)."""
    rule = {"right": "---:", "left": ":---"}
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)
