"""Build typed tables and headlines with the one decision rule applied (docs/statistics.md).

A benchmark computes, per cell, an estimate, its CI and a p-value at the
inference unit; these helpers add the Holm adjustment over the table's cells
(``<column>_p_holm``) and build the :class:`~iqabench.contracts.results.Headline` grid
from the same numbers, so the table, the headline, the comparison page and the
.tex exports all read one decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..contracts.results import Headline, Table
from .stats import CI_LEVEL_TEXT, MIN_UNITS, decide


def holm_column(column: str) -> str:
    return f"{column}_p_holm"


def effect_table(frame: pd.DataFrame, effects: dict[str, str], *, footnote: str = "", unit: str = "",
                 n_units_column: str = "n_units") -> Table:
    """``frame`` with a ``<effect>_p_holm`` column per effect (``effects``: effect column -> its raw p column),
    all effect cells of the table adjusted together (one family), as a :class:`Table`."""
    frame = frame.copy()
    columns = list(effects)
    if len(frame) and columns:
        raw = np.concatenate([frame[effects[c]].to_numpy(dtype=float) for c in columns])
        adjusted, _ = decide(raw)
        for i, c in enumerate(columns):
            frame[holm_column(c)] = adjusted[i * len(frame):(i + 1) * len(frame)]
    else:
        for c in columns:
            frame[holm_column(c)] = pd.Series(dtype=float)
    return Table(frame, footnote=footnote, unit=unit, effects={c: holm_column(c) for c in columns},
                 n_units_column=n_units_column if n_units_column in frame else "", p_values=dict(effects))


def level_table(frame: pd.DataFrame, *, footnote: str = "", unit: str = "", n_units_column: str = "n_units") -> Table:
    """A table of levels (means, accuracies, distances): CIs, no tests, so no marks and no bold."""
    return Table(frame, footnote=footnote, unit=unit, n_units_column=n_units_column if n_units_column in frame else "")


def _grid(flat: pd.DataFrame, row_key: str, column_key: str, column: str | None) -> pd.DataFrame:
    rows = list(dict.fromkeys(flat[row_key].astype(str)))
    cols = list(dict.fromkeys(flat[column_key].astype(str)))
    if column is None or column not in flat:
        return pd.DataFrame(np.nan, index=pd.Index(rows, name=row_key), columns=cols)
    grid = flat.assign(**{row_key: flat[row_key].astype(str), column_key: flat[column_key].astype(str)}).pivot(
        index=row_key, columns=column_key, values=column)
    return grid.reindex(index=rows, columns=cols).astype(float)


def long_headline(source: str, frame: pd.DataFrame, *, row_key: str, column_key: str, value: str, quantity: str,
                  signed: bool, higher_better: dict[str, bool | None] | bool | None, footnote: str = "",
                  p_column: str | None = None, n_units_column: str | None = "n_units", unit: str = "",
                  n_images: int | None = None, p_adjusted_column: str | None = None) -> Headline:
    """The headline grid of a long table (one row per row_key x column_key), Holm-adjusted over its cells; or, with
    ``p_adjusted_column``, carrying the table's own Holm-adjusted p-values (the grid is a subset of a larger family:
    the same estimate then gets the same mark in the table and in the headline)."""
    est = _grid(frame, row_key, column_key, value)
    low = _grid(frame, row_key, column_key, value + "_ci_low")
    high = _grid(frame, row_key, column_key, value + "_ci_high")
    p = _grid(frame, row_key, column_key, p_column) if signed and p_column else None
    n_units = _grid(frame, row_key, column_key, n_units_column) if n_units_column else None
    adjusted = _grid(frame, row_key, column_key, p_adjusted_column) if p is not None and p_adjusted_column else None
    return _finish(source, quantity, est, low, high, higher_better, signed, footnote, p, n_units, unit, n_images,
                   adjusted)


def wide_headline(source: str, frame: pd.DataFrame, *, row_key: str, columns: Sequence[str], quantity: str,
                  signed: bool, higher_better: dict[str, bool | None] | bool | None, footnote: str = "",
                  p_suffix: str = "_p", n_units_column: str | None = "n_units", unit: str = "",
                  n_images: int | None = None) -> Headline:
    """The headline grid of a wide table (one row per row_key, one column per quantity ``c`` with ``c_ci_low``,
    ``c_ci_high`` and, when signed, ``c + p_suffix``)."""
    index = pd.Index(frame[row_key].astype(str), name=row_key)

    def part(suffix: str) -> pd.DataFrame:
        return pd.DataFrame({c: (frame[c + suffix].to_numpy(float) if c + suffix in frame
                                 else np.full(len(frame), np.nan)) for c in columns}, index=index)
    n_units = None
    if n_units_column and n_units_column in frame:
        n_units = pd.DataFrame({c: frame[n_units_column].to_numpy(float) for c in columns}, index=index)
    return _finish(source, quantity, part(""), part("_ci_low"), part("_ci_high"), higher_better, signed, footnote,
                   part(p_suffix) if signed else None, n_units, unit, n_images)


def _finish(source, quantity, est, low, high, higher_better, signed, footnote, p, n_units, unit, n_images,
            adjusted: pd.DataFrame | None = None) -> Headline:
    if not isinstance(higher_better, dict):
        higher_better = {str(c): higher_better for c in est.columns}
    if p is not None and adjusted is None:
        flat, _ = decide(p.to_numpy(dtype=float).ravel())
        adjusted = pd.DataFrame(flat.reshape(p.shape), index=p.index, columns=p.columns)
    return Headline(source, quantity, est, low, high, {str(k): v for k, v in higher_better.items()}, signed,
                    footnote, p, adjusted, n_units, unit, n_images)


def unit_sentence(unit: str, n_units: Sequence[float] | float | None = None, n_images: int | None = None) -> str:
    """The footnote sentence naming the inference unit, how many there are and the small-sample rule."""
    if not unit:
        return ""
    counts = [] if n_units is None else [int(v) for v in np.atleast_1d(np.asarray(n_units, float)) if np.isfinite(v)]
    plural = "prompts" if unit == "prompt" else unit + "s"
    parts = []
    if counts:
        many = str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
        parts.append(f"n = {many} {plural}")
    if n_images:
        parts.append(f"from {n_images} images")
    detail = f" ({' '.join(parts)})" if parts else ""
    return f"Inference unit: the {unit}{detail}; below {MIN_UNITS} {plural} no {CI_LEVEL_TEXT} CI is shown."


def decision_sentence() -> str:
    """The one decision rule, as every footnote states it."""
    from .stats import ALPHA

    return (f"Tests at the inference unit (the test is named above); significance: Holm-adjusted "
            f"p < {ALPHA:g} over this table's cells (statsmodels multipletests, method='holm'); n.s. = not "
            "significant under that rule; bold = the best significant cell of a column (none on ties).")
