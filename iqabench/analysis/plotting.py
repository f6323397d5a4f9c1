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

from iqabench.analysis.labels import figure_labels
from iqabench.analysis.number_format import format_ci, format_number

MIN_FONT_PT = 8  # no text in a figure smaller than this at 100 %


def heatmap_figure(matrix: pd.DataFrame, title: str, center: float = 0.0, fmt: str = ".1f", *,
                   low: pd.DataFrame | None = None, high: pd.DataFrame | None = None,
                   scale: str = "diverging", vmin: float | None = None, vmax: float | None = None,
                   caption: str = "", null: float | None = None, spread: float | None = None,
                   significant: pd.DataFrame | None = None, too_few: pd.DataFrame | None = None) -> Figure:
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

    Numbers are written by ``iqabench.analysis.number_format`` (the tables' formatter; ``fmt`` is only validated, kept
    for callers that pass it). ``spread`` fixes a diverging scale's half-range (a correlation: 1), so two runs
    of a bounded quantity colour the same value alike; text is at least ``MIN_FONT_PT`` and long titles end in
    an ellipsis.
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
        if spread is None:
            spread = float(np.max(np.abs(finite - center))) if finite.size else 1.0
        spread = spread if spread > 0 else 1.0
        color_kw = {"cmap": "RdBu", "center": center, "vmin": center - spread, "vmax": center + spread}
    else:
        lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
        hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        color_kw = {"cmap": "viridis", "vmin": lo, "vmax": hi if hi > lo else lo + 1.0}

    annot = np.full(array.shape, "", dtype=object)
    # cells resting on too few units (the tables' one small-sample rule): the estimate without its brackets
    few = (too_few.reindex_like(matrix).fillna(False).astype(bool).to_numpy() if too_few is not None
           else np.zeros(array.shape, dtype=bool))
    for (i, j), value in np.ndenumerate(array):
        if not np.isfinite(value):
            continue
        # the report's formatter (significant figures, true minus, no "-0.0", no "0.0 [0.0, 0.0]" for a small
        # non-zero effect), the estimate over its CI
        annot[i, j] = format_ci(value, *(b[i, j] for b in bounds)).replace(" [", "\n[", 1) \
            if bounds is not None and not few[i, j] else format_number(value)
    ns = np.zeros(array.shape, dtype=bool)
    reference = center if scale == "diverging" else null
    if bounds is not None and reference is not None:
        # a CI of zero width at the null (fr-distances' diagonal: an image against itself) is trivially that
        # value, not an effect that failed a test: no hatching
        ns = (np.isfinite(bounds[0]) & np.isfinite(bounds[1]) & (bounds[0] <= reference) & (bounds[1] >= reference)
              & (bounds[0] < bounds[1]))
    if significant is not None:
        ns = np.isfinite(array) & ~significant.reindex_like(matrix).fillna(False).astype(bool).to_numpy()

    # Generator specs can be long paths: shorten labels for the axes (the tables keep the full names), one set of
    # labels for rows and columns so that no two rows (or columns) read the same
    labels = _short_labels([*values.index, *values.columns])
    values = values.rename(index=lambda v: labels[str(v)], columns=lambda v: labels[str(v)])
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
                    annot_kws={"fontsize": MIN_FONT_PT if bounds is not None else 10}, cbar_kws={"shrink": 0.8},
                    **color_kw)
    for i, j in zip(*np.nonzero(ns), strict=True):
        ax.add_patch(Rectangle((j, i), 1, 1, facecolor="white", alpha=0.55, hatch="///", edgecolor="grey",
                               linewidth=0))
    ax.set_title(short_title(title, fig.get_figwidth()), fontsize=11)
    ax.set_xlabel(str(matrix.columns.name or ""))
    ax.set_ylabel(str(matrix.index.name or ""))
    ax.tick_params(axis="x", labelrotation=30)
    ax.tick_params(axis="y", labelrotation=0)
    style_axes(ax)
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


def hatched_cells(fig: Figure) -> list[tuple[int, int]]:
    """(row, column) of the cells ``heatmap_figure`` hatched as not significant (for tests and checks)."""
    ax = fig.axes[0]
    return sorted((int(round(p.get_y())), int(round(p.get_x()))) for p in ax.patches
                  if isinstance(p, Rectangle) and p.get_hatch())


def _short_labels(labels: list[object], limit: int = 36) -> dict[str, str]:
    """Axis labels: generator specs as their short labels (``iqabench.analysis.labels.figure_labels``), cut to ``limit``
    characters, unique within the figure."""
    return figure_labels(labels, limit)


def ellipsize(text: object, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked by a trailing ellipsis (never silently clipped)."""
    text = str(text)
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"


def short_title(title: str, width_in: float, font_pt: float = 11.0) -> str:
    """Each line of ``title`` cut with an ellipsis to what fits ``width_in`` inches at ``font_pt`` (about 0.55
    em per character)."""
    limit = max(12, int(width_in * 72 / (0.55 * font_pt)))
    return "\n".join(ellipsize(line, limit) for line in str(title).splitlines())


def style_axes(ax: Any, font_pt: float = MIN_FONT_PT) -> None:
    """Tick labels and axis labels at least ``font_pt`` points (a 6 pt label is unreadable at 100 %)."""
    ax.tick_params(labelsize=max(font_pt, 8))
    ax.xaxis.label.set_fontsize(max(font_pt + 1, 9))
    ax.yaxis.label.set_fontsize(max(font_pt + 1, 9))


def legend_outside(ax: Any, **kwargs: Any) -> Any:
    """A legend to the right of the axes, outside the data, one entry per label (matplotlib repeats a label
    given to several artists, e.g. a baseline line drawn in every panel)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if not unique:
        return None
    return ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0.0, fontsize=max(MIN_FONT_PT, kwargs.pop("fontsize", MIN_FONT_PT)),
                     frameon=False, **kwargs)


def figure_legend(fig: Figure, axes: list, ncol: int | None = None) -> Any:
    """One legend for all panels, under them (outside every panel's data), one entry per label: a baseline drawn
    in each panel, or by two series of one generator, is listed once."""
    unique: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                unique.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not unique:
        return None
    ncol = ncol or min(3, len(unique))
    return fig.legend(unique.values(), unique.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
                      fontsize=MIN_FONT_PT + 1, frameon=False)
