"""Figures benchmarks hand to the report.

Figures are built on a bare ``matplotlib.figure.Figure`` with an Agg canvas
rather than through pyplot: that never touches the process-wide backend or
pyplot's figure list, so building many figures in a long run leaks nothing and
works on machines with no display.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def heatmap_figure(matrix: pd.DataFrame, title: str, center: float = 0.0, fmt: str = ".1f") -> Figure:
    """An annotated heatmap with a diverging colormap centred on ``center``.

    Made for the generators x metrics RelGain matrix: RelGain is a signed
    relative change against the baseline, so the colour scale is symmetric
    around ``center`` (0 = no change) and a gain and a loss of the same size get
    the same colour strength. ``RdBu`` is readable by colour-blind readers.
    Missing cells (NaN) are left blank instead of coloured as zero.
    """
    if not isinstance(matrix, pd.DataFrame) or matrix.empty:
        raise ValueError("heatmap_figure needs a non-empty pandas DataFrame (rows x columns of numbers)")
    try:
        values = matrix.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"heatmap_figure needs numeric cells; could not convert the matrix to float ({err})") from err
    try:
        format(1.0, fmt)
    except ValueError as err:
        raise ValueError(f"fmt {fmt!r} is not a Python number format such as '.1f'") from err

    finite = values.to_numpy()[np.isfinite(values.to_numpy())]
    spread = float(np.max(np.abs(finite - center))) if finite.size else 1.0
    spread = spread if spread > 0 else 1.0

    # Generator specs can be long paths: shorten labels for the axes (the tables keep the full names).
    values = values.rename(index=_short_label, columns=_short_label)
    n_rows, n_cols = values.shape
    fig = Figure(figsize=(max(4.0, 1.1 * n_cols + 2.5), max(2.5, 0.5 * n_rows + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    with warnings.catch_warnings():
        # seaborn 0.13 calls Colormap.set_bad, which matplotlib >= 3.11 flags as pending deprecation
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(
            values,
            ax=ax,
            cmap="RdBu",
            center=center,
            vmin=center - spread,
            vmax=center + spread,
            annot=True,
            fmt=fmt,
            linewidths=0.5,
            linecolor="white",
            cbar_kws={"shrink": 0.8},
        )
    ax.set_title(title)
    ax.set_xlabel(str(matrix.columns.name or ""))
    ax.set_ylabel(str(matrix.index.name or ""))
    ax.tick_params(axis="x", labelrotation=30)
    ax.tick_params(axis="y", labelrotation=0)
    fig.tight_layout()
    return fig


def _short_label(label: object, limit: int = 36) -> str:
    text = str(label)
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[-keep:]}"
