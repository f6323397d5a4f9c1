"""The headline table of a run: generators x metrics, each cell an estimate with its CI.

The grid is the benchmark's typed :class:`iqabench.results.Headline`: this
module only renders it. Which cells are significant (Holm-adjusted p over the
grid's cells, docs/statistics.md), which one is bold (the best significant cell
of a column; none on ties) and which rest on too few units for a CI are fields
of the Headline, never guessed from table, benchmark or column names. Cells
are formatted by ``Styler.format`` from (estimate, low, high) triples and
marked by ``Styler.set_td_classes``; every label is HTML-escaped by Styler.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from iqabench.results import Headline, Result
from iqabench.stats import ALPHA, CI_LEVEL_TEXT, MIN_UNITS

from .tables import _decimals, format_number

__all__ = ["Headline", "best_mask", "cell_text", "headline", "headline_html", "headline_latex", "legend",
           "not_significant"]


def headline(result: Result) -> Headline | None:
    """The run's headline grid as its benchmark declared it (None when it declared none)."""
    return result.headline


def _plural(unit: str) -> str:
    return "prompts" if unit in ("", "prompt") else unit + "s"


def _fmt(triple: tuple[float, float, float], ns: bool = False, few: str = "") -> str:
    """``est [low, high]`` to about three significant digits of the largest of the three (so bounds line up);
    ``few``: the unit's plural when the estimate rests on too few units for a CI (shown instead of it)."""
    value, low, high = triple
    if value is None or not np.isfinite(value):
        return format_number(float("nan"))
    shown = (value,) if few else (value, low, high)
    largest = max(abs(v) for v in shown if np.isfinite(v))
    decimals = None if (largest != 0 and not 1e-3 <= largest < 1e5) else max(0, _decimals(largest) - 1)
    text = format_number(value, decimals)
    if few:
        text += f" (too few {few} for a {CI_LEVEL_TEXT} CI)"
    elif np.isfinite(low) and np.isfinite(high):
        text += f" [{format_number(low, decimals)}, {format_number(high, decimals)}]"
    if ns:
        text += " n.s."
    return text


def cell_text(head: Headline, i: int, j: int) -> str:
    """The text of cell (i, j): ``est [low, high]``, " n.s." where the cell's effect is not significant."""
    few = _plural(head.unit) if head.too_few_units().iat[i, j] else ""
    return _fmt((head.estimate.iat[i, j], head.low.iat[i, j], head.high.iat[i, j]),
                bool(not_significant(head).iat[i, j]), few)


def best_mask(head: Headline) -> pd.DataFrame:
    """The Headline's bold cells: the best significant cell per column (see ``Headline.bold``)."""
    return head.bold


def not_significant(head: Headline) -> pd.DataFrame:
    """True where a signed cell with an estimate is not significant under the Holm rule."""
    if not head.signed:
        return pd.DataFrame(False, index=head.estimate.index, columns=head.estimate.columns)
    return ~head.significant & head.estimate.notna()


def headline_html(head: Headline, uuid: str) -> str:
    """The grid as an HTML table through pandas Styler (escaped labels; classes ``best`` and ``ns``)."""
    triples = pd.DataFrame(
        [[(head.estimate.iat[i, j], head.low.iat[i, j], head.high.iat[i, j])
          for j in range(head.estimate.shape[1])] for i in range(head.estimate.shape[0])],
        index=head.estimate.index.astype(str), columns=head.estimate.columns.astype(str))
    best, ns = best_mask(head), not_significant(head)
    texts = [[cell_text(head, i, j) for j in range(best.shape[1])] for i in range(best.shape[0])]
    classes = pd.DataFrame(
        [["num" + (" best" if best.iat[i, j] else "") + (" ns" if ns.iat[i, j] else "")
          for j in range(best.shape[1])] for i in range(best.shape[0])],
        index=triples.index, columns=triples.columns)
    triples = pd.DataFrame(texts, index=triples.index, columns=triples.columns)
    styler = (triples.style.format(escape="html")
              .format_index(escape="html", axis=0).format_index(escape="html", axis=1)
              .set_td_classes(classes).set_uuid(uuid)
              .set_table_attributes('class="headline"'))
    styler.index.names = [None]
    styler.columns.names = [None]
    return styler.to_html(cell_ids=False, doctype_html=False)


def headline_latex(head: Headline, name: str = "headline") -> str:
    """The headline grid as a booktabs table: the same cells as the HTML (``est [low, high]``, "n.s."), the best
    per column in ``\\textbf{}`` (a Styler ``--rwrap`` LaTeX style), labels and caption LaTeX-escaped."""
    from .tables import latex_escape

    text = pd.DataFrame([[cell_text(head, i, j) for j in range(head.estimate.shape[1])]
                         for i in range(head.estimate.shape[0])],
                        index=head.estimate.index.astype(str), columns=head.estimate.columns.astype(str))
    best = best_mask(head)
    css = pd.DataFrame([["textbf: --rwrap;" if best.iat[i, j] else "" for j in range(best.shape[1])]
                        for i in range(best.shape[0])], index=text.index, columns=text.columns)
    styler = (text.style.format(escape="latex").format_index(escape="latex", axis=0)
              .format_index(escape="latex", axis=1).apply(lambda _: css, axis=None))
    styler.index.names = [None]
    styler.columns.names = [None]
    caption = latex_escape(". ".join(p for p in (head.quantity, legend(head), head.footnote) if p))
    label = "tab:" + "".join(ch if ch.isalnum() or ch in "-:" else "-" for ch in name)
    return styler.to_latex(hrules=True, column_format="l" + "r" * text.shape[1], caption=caption, label=label,
                           position_float="centering")


def legend(head: Headline) -> str:
    parts = []
    if head.signed:
        parts.append(f"n.s.: Holm-adjusted p >= {ALPHA:g} over this grid's cells (tests at the "
                     f"{head.unit or 'prompt'} level); bold: the best significant cell of its column (none on ties); "
                     "signs are aligned so that positive means better")
    elif len(head.estimate) > 1:
        parts.append("levels without a test: no cell is bold (compare runs with `iqabench report A B` for tests)")
    if head.too_few_units().to_numpy().any():
        parts.append(f"below {MIN_UNITS} {_plural(head.unit)} no {CI_LEVEL_TEXT} CI is shown")
    if head.n_units is not None:
        counts = [int(v) for v in head.n_units.to_numpy(float).ravel() if np.isfinite(v)]
        if counts:
            rng = str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
            parts.append(f"each estimate rests on {rng} {_plural(head.unit)}"
                         + (f" ({head.n_images} images)" if head.n_images else ""))
    return "; ".join(parts)


def is_finite(value: float) -> bool:
    return value is not None and math.isfinite(value)
