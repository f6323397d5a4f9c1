"""Figures benchmarks hand to the report.

Figures are built on a bare ``matplotlib.figure.Figure`` with an Agg canvas
rather than through pyplot: that never touches the process-wide backend or
pyplot's figure list, so building many figures in a long run leaks nothing and
works on machines with no display.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def heatmap_figure(matrix: pd.DataFrame, title: str, center: float = 0.0, fmt: str = ".1f", *,
                   low: pd.DataFrame | None = None, high: pd.DataFrame | None = None,
                   scale: str = "diverging", vmin: float | None = None, vmax: float | None = None,
                   caption: str = "", null: float | None = None,
                   significant: pd.DataFrame | None = None) -> Figure:
    """An annotated heatmap that carries its uncertainty.

    ``scale="diverging"`` (RelGain, correlations, differences: quantities with a
    meaningful zero) centres ``RdBu`` on ``center``, symmetric so a gain and a
    loss of the same size get the same colour strength; blue is better (callers
    align signs so that positive means better). ``scale="sequential"`` (accuracies,
    win rates) uses ``viridis`` from ``vmin`` to ``vmax`` -- no midpoint is
    implied. Both are readable by colour-blind readers.

    With ``low``/``high`` (CI bounds, same shape) each cell reads
    ``estimate`` over ``[low, high]``; on a diverging scale a cell whose CI
    includes ``center`` is hatched and faded: the colour of a non-significant
    effect is not painted as solidly as a real one. A sequential scale has no
    such point unless the caller names one with ``null`` (e.g. a distance of 0:
    "no change"); cells whose CI includes ``null`` are then hatched the same way. Missing cells (NaN) stay
    blank. ``significant`` (booleans, same shape: the table's Holm decision) replaces the CI rule: every cell
    not significant is hatched, so the figure marks what the tables mark.
    The caption (``Figure.get_label()``, shown under the figure in the
    report) says what is plotted; pass ``caption`` to replace the generated one.
    """
    if not isinstance(matrix, pd.DataFrame) or matrix.empty:
        raise ValueError("heatmap_figure needs a non-empty pandas DataFrame (rows x columns of numbers)")
    if scale not in ("diverging", "sequential"):
        raise ValueError(f"scale must be 'diverging' or 'sequential', not {scale!r}")
    try:
        values = matrix.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"heatmap_figure needs numeric cells; could not convert the matrix to float ({err})") from err
    try:
        format(1.0, fmt)
    except ValueError as err:
        raise ValueError(f"fmt {fmt!r} is not a Python number format such as '.1f'") from err
    bounds = None
    if low is not None and high is not None:
        bounds = (low.reindex_like(matrix).astype(float).to_numpy(), high.reindex_like(matrix).astype(float).to_numpy())

    array = values.to_numpy()
    finite = array[np.isfinite(array)]
    if scale == "diverging":
        spread = float(np.max(np.abs(finite - center))) if finite.size else 1.0
        spread = spread if spread > 0 else 1.0
        color_kw = {"cmap": "RdBu", "center": center, "vmin": center - spread, "vmax": center + spread}
    else:
        lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
        hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        color_kw = {"cmap": "viridis", "vmin": lo, "vmax": hi if hi > lo else lo + 1.0}

    fmt = _readable_format(array, fmt)
    annot = np.full(array.shape, "", dtype=object)
    for (i, j), value in np.ndenumerate(array):
        if not np.isfinite(value):
            continue
        text = format(value, fmt)
        if bounds is not None and np.isfinite(bounds[0][i, j]) and np.isfinite(bounds[1][i, j]):
            text += f"\n[{format(bounds[0][i, j], fmt)}, {format(bounds[1][i, j], fmt)}]"
        annot[i, j] = text
    ns = np.zeros(array.shape, dtype=bool)
    reference = center if scale == "diverging" else null
    if bounds is not None and reference is not None:
        ns = np.isfinite(bounds[0]) & np.isfinite(bounds[1]) & (bounds[0] <= reference) & (bounds[1] >= reference)
    if significant is not None:
        ns = np.isfinite(array) & ~significant.reindex_like(matrix).fillna(False).astype(bool).to_numpy()

    # Generator specs can be long paths: shorten labels for the axes (the tables keep the full names).
    values = values.rename(index=_short_label, columns=_short_label)
    n_rows, n_cols = values.shape
    cell_w = 1.5 if bounds is not None else 1.1
    fig = Figure(figsize=(max(4.5, cell_w * n_cols + 3.0), max(2.6, (0.7 if bounds is not None else 0.5) * n_rows
                                                                    + 1.8)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    with warnings.catch_warnings():
        # seaborn 0.13 calls Colormap.set_bad, which matplotlib >= 3.11 flags as pending deprecation
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(values, ax=ax, annot=annot, fmt="", linewidths=0.5, linecolor="white",
                    annot_kws={"fontsize": 8 if bounds is not None else 10}, cbar_kws={"shrink": 0.8},
                    **color_kw)
    for i, j in zip(*np.nonzero(ns), strict=True):
        ax.add_patch(Rectangle((j, i), 1, 1, facecolor="white", alpha=0.55, hatch="///", edgecolor="grey",
                               linewidth=0))
    ax.set_title(title)
    ax.set_xlabel(str(matrix.columns.name or ""))
    ax.set_ylabel(str(matrix.index.name or ""))
    ax.tick_params(axis="x", labelrotation=30)
    ax.tick_params(axis="y", labelrotation=0)
    fig.tight_layout()
    fig.set_label(caption or _heatmap_caption(matrix, title, scale, center, bounds is not None, null))
    return fig


def ci_table_heatmap(table: pd.DataFrame, row: str, columns: list[str], title: str, *, column_axis: str,
                     **kwargs: Any) -> Figure:
    """:func:`heatmap_figure` of a wide table that carries each plotted column ``X`` with its CI bounds in
    ``X_ci_low`` and ``X_ci_high`` (the layout the report shows as ``X [low, high]``).

    ``row`` is the label column (one heatmap row per value), ``columns`` the plotted columns in order and
    ``column_axis`` the name of the column axis; other keyword arguments (``center``, ``fmt``, ``caption``, ...)
    go to :func:`heatmap_figure`.
    """
    frame = table.set_index(row)

    def grid(suffix: str) -> pd.DataFrame:
        out = frame[[c + suffix for c in columns]].set_axis(columns, axis=1).astype(float)
        out.index.name, out.columns.name = row, column_axis
        return out

    return heatmap_figure(grid(""), title, low=grid("_ci_low"), high=grid("_ci_high"), **kwargs)


def _heatmap_caption(matrix: pd.DataFrame, title: str, scale: str, center: float, with_ci: bool,
                     null: float | None = None) -> str:
    rows, cols = matrix.index.name or "rows", matrix.columns.name or "columns"
    text = f"{title}: one cell per {rows} (rows) and {cols} (columns), annotated with its value"
    text += " and 95% CI." if with_ci else "."
    if scale == "diverging":
        text += f" Diverging colours around {center:g} (blue above, red below)."
        if with_ci:
            text += f" Hatched, faded cells: the CI includes {center:g} (not significant)."
    else:
        text += " Sequential colours (darker = lower)."
        if with_ci and null is not None:
            text += f" Hatched, faded cells: the CI includes {null:g} (not significant)."
    return text


def _readable_format(array: np.ndarray, fmt: str) -> str:
    """``fmt``, or ``.2g`` when ``fmt`` would print the largest value as 0 (a RelGain of 0.0008% shown as
    "0.0 [0.0, 0.0]" says nothing; "0.00078 [0.00071, 0.00092]" does)."""
    finite = np.abs(array[np.isfinite(array)])
    largest = float(finite.max()) if finite.size else 0.0
    if largest > 0 and float(format(largest, fmt)) == 0.0:
        return ".2g"
    return fmt


def hatched_cells(fig: Figure) -> list[tuple[int, int]]:
    """(row, column) of the cells ``heatmap_figure`` hatched as not significant (for tests and checks)."""
    ax = fig.axes[0]
    return sorted((int(round(p.get_y())), int(round(p.get_x()))) for p in ax.patches
                  if isinstance(p, Rectangle) and p.get_hatch())


def _short_label(label: object, limit: int = 36) -> str:
    text = str(label)
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[-keep:]}"
