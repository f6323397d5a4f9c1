"""The headline table of a run: generators x metrics, each cell an estimate with its CI.

The grid is the benchmark's typed :class:`iqabench.contracts.results.Headline`: this
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

from iqabench.analysis.number_format import format_ci, format_number
from iqabench.analysis.stats import ALPHA, CI_LEVEL_TEXT, MIN_UNITS
from iqabench.contracts.results import Headline, Result

__all__ = ["Headline", "best_mask", "bold_mask", "cell_text", "headline", "headline_html", "headline_latex", "legend",
           "not_significant", "relabel"]


def headline(result: Result) -> Headline | None:
    """The run's headline grid as its benchmark declared it (None when it declared none)."""
    return result.headline


def relabel(head: Headline, rows: list[str]) -> Headline:
    """A copy of ``head`` whose rows read ``rows`` (short generator labels), in every per-cell frame (estimates,
    bounds, p-values, units), so the decisions stay aligned with the numbers."""
    from dataclasses import fields, replace

    index = pd.Index(rows, name=head.estimate.index.name)
    return replace(head, **{f.name: getattr(head, f.name).set_axis(index) for f in fields(head)
                            if isinstance(getattr(head, f.name), pd.DataFrame)})


def _plural(unit: str) -> str:
    return "prompts" if unit in ("", "prompt") else unit + "s"


def _fmt(triple: tuple[float, float, float], ns: bool = False, few: str = "") -> str:
    """``est [low, high]`` through the shared formatter (``iqabench.analysis.number_format``), plus " n.s.";
    ``few``: the unit's plural when the estimate rests on too few units for a CI (said instead of it)."""
    value, low, high = triple
    if value is None or not np.isfinite(value):
        return format_number(float("nan"))
    if few:
        text = format_number(value) + f" (too few {few} for a {CI_LEVEL_TEXT} CI)"
    else:
        text = format_ci(value, low, high)
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


def bold_mask(head: Headline) -> pd.DataFrame:
    """The cells a table may print in bold (HTML headline, ``*.headline.tex``, comparison): the best significant
    cell of each column under the one decision rule (``Headline.bold``); a bold n.s. cell would read as a winner."""
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
    best, ns = bold_mask(head), not_significant(head)
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


def headline_latex(head: Headline, name: str = "headline", run: str = "") -> str:
    """The headline grid as a booktabs table: the same cells as the HTML (``est [low, high]``, "n.s."), bold
    only where :func:`bold_mask` allows, fitted to ``\\linewidth``, labelled ``tab:<run>-<name>-headline`` (the
    full table's export is ``tab:<run>-<name>``)."""
    from .latex import label, latex_table

    rows = head.estimate.index.name or "row"
    text = pd.DataFrame([[cell_text(head, i, j) for j in range(head.estimate.shape[1])]
                         for i in range(head.estimate.shape[0])], columns=head.estimate.columns.astype(str))
    text.insert(0, rows, list(head.estimate.index.astype(str)))
    bold = bold_mask(head).reset_index(drop=True).set_axis(list(text.columns[1:]), axis=1)
    caption = ". ".join(p for p in (head.quantity, legend(head), head.footnote) if p)
    return latex_table(text, caption=caption, tag=label(run, name, "headline"), numeric=set(text.columns[1:]),
                       bold=bold, raw_headers=set(text.columns[1:]))


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
