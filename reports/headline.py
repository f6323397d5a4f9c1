"""The headline table of a run: generators x metrics, each cell an estimate with its CI.

It replaces a dump of summary values with what a reader of a paper table
expects: formatted estimates with their 95% CIs, the best value per column in
bold (by the metric's own direction), and "n.s." where a signed quantity's CI
(a gain, a difference) crosses zero. It is built with pandas ``Styler``:
cells are formatted by ``Styler.format`` from (estimate, low, high) triples and
marked by ``Styler.set_td_classes``; every label is HTML-escaped by Styler.

Which table heads a run: a table may declare it in ``frame.attrs["headline"]``
(``value``: the CI'd column of a long table; or ``columns``: the columns of a
wide table, with ``lower_better`` columns; either with an optional ``quantity`` name;
``signed``: zero means no effect). Otherwise the first table, preferring the
benchmarks' main tables (``relgain``, ``scores``), with a row column
(``generator``, ``method`` or ``condition``), a ``metric`` column and exactly
one CI'd value column (``X``, ``X_ci_low``, ``X_ci_high``); or a row column
and CI'd value columns (one column per quantity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .tables import CI_HIGH, CI_LOW, ci_columns, format_ci, has_row_labels

HEADLINE_ATTR = "headline"  # DataFrame.attrs key: {"value": column, "signed": bool} to choose/describe the headline

ROW_KEYS = ("generator", "method", "condition")
PREFERRED = ("relgain", "scores", "geneval", "seed_consistency", "win_rates")
# tables that describe a reference, not the result (condition-sweep's baseline levels)
NOT_HEADLINES = ("baseline",)
# quantities whose zero means "no effect": a CI across zero is "n.s."
SIGNED_WORDS = ("relgain", "gain", "improvement", "difference", "delta")


@dataclass
class Headline:
    """Estimates with CIs in a rows x columns grid, and how to read them."""

    source: str  # table it came from
    quantity: str
    estimate: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    higher_better: dict[str, bool | None]  # per column; None: no direction (no "best")
    signed: bool  # zero = no effect -> "n.s." when the CI crosses it
    footnote: str = ""


def _is_signed(name: str) -> bool:
    return any(word in name.lower() for word in SIGNED_WORDS)


def _direction(table: pd.DataFrame, column_key: str, value: str) -> dict[str, bool | None]:
    if _is_signed(value):
        return {}  # every column: signs already aligned so higher is better
    if "direction" not in table:
        return {}
    return {str(k): str(d).startswith("higher") for k, d in zip(table[column_key], table["direction"], strict=False)}


def headline(tables: dict[str, pd.DataFrame], footnotes: dict[str, str] | None = None) -> Headline | None:
    """The run's headline grid, or None when no table has CIs in a usable shape."""
    footnotes = footnotes or {}
    declared = [n for n, t in tables.items() if t.attrs.get(HEADLINE_ATTR)]
    order = list(dict.fromkeys(declared + [n for n in PREFERRED if n in tables]
                               + [n for n in tables if n not in NOT_HEADLINES]))
    for name in order:
        frame = tables[name]
        flat = frame.reset_index() if has_row_labels(frame) else frame
        flat = flat.set_axis([str(c) for c in flat.columns], axis=1)
        row_key = next((k for k in ROW_KEYS if k in flat), None)
        cis = ci_columns(list(flat.columns))
        declared = frame.attrs.get(HEADLINE_ATTR) or {}
        if row_key is None or not (cis or declared.get("columns")):
            continue
        note = footnotes.get(name) or str(frame.attrs.get("footnote", "") or "")
        if declared.get("value") in cis:
            cis = {declared["value"]: cis[declared["value"]]}
        if "metric" in flat and len(cis) == 1 and not declared.get("columns"):
            value = next(iter(cis))
            if flat.duplicated([row_key, "metric"]).any():
                continue
            def pivot(col: str, flat=flat, row_key=row_key) -> pd.DataFrame:
                grid = flat.pivot(index=row_key, columns="metric", values=col)
                return grid.reindex(index=list(dict.fromkeys(flat[row_key])),
                                    columns=list(dict.fromkeys(flat["metric"]))).astype(float)
            signed = bool(declared.get("signed", _is_signed(value)))
            est, low, high = pivot(value), pivot(value + CI_LOW), pivot(value + CI_HIGH)
            directions = _direction(flat, "metric", value)
            higher = {str(c): (True if signed else directions.get(str(c))) for c in est.columns}
            return Headline(name, str(declared.get("quantity", value)), est, low, high, higher, signed, note)
        if flat[row_key].duplicated().any():
            continue
        if declared.get("columns"):  # a wide table that names its columns (CIs optional, e.g. FID)
            columns = [c for c in declared["columns"] if c in flat]
            index = pd.Index(flat[row_key].astype(str), name=row_key)
            def part(suffix: str, flat=flat, index=index, columns=columns) -> pd.DataFrame:
                return pd.DataFrame({c: (flat[c + suffix].to_numpy(float) if c + suffix in flat
                                         else np.full(len(flat), np.nan)) for c in columns}, index=index)
            est = pd.DataFrame({c: flat[c].to_numpy(float) for c in columns}, index=index)
            lower = set(declared.get("lower_better", []))
            higher = {c: (c not in lower) if declared.get("higher_better", True) is not None else None
                      for c in columns}
            quantity = str(declared.get("quantity", ", ".join(columns)))
            return Headline(name, quantity, est, part(CI_LOW), part(CI_HIGH), higher,
                            bool(declared.get("signed", False)), note)
        if not cis:
            continue
        columns = list(cis)
        index = pd.Index(flat[row_key].astype(str), name=row_key)
        est = pd.DataFrame({c: flat[c].to_numpy(float) for c in columns}, index=index)
        low = pd.DataFrame({c: flat[c + CI_LOW].to_numpy(float) for c in columns}, index=index)
        high = pd.DataFrame({c: flat[c + CI_HIGH].to_numpy(float) for c in columns}, index=index)
        signed = all(_is_signed(c) for c in columns) or _is_signed(name)
        higher = {c: (True if signed or "win_rate" in c or "accuracy" in c or "score" in c else None)
                  for c in columns}
        return Headline(name, ", ".join(columns), est, low, high, higher, signed, note)
    return None


def _fmt(triple: tuple[float, float, float], signed: bool) -> str:
    """``est [low, high]`` through the shared formatter (``iqabench.number_format.format_ci``), plus " n.s."."""
    value, low, high = triple
    text = format_ci(value, low, high)
    if signed and np.isfinite(low) and np.isfinite(high) and low <= 0 <= high:
        text += " n.s."
    return text


def cell_text(head: Headline, i: int, j: int) -> str:
    """The text of cell (i, j): ``est [low, high]`` plus " n.s." where a signed CI crosses zero."""
    return _fmt((head.estimate.iat[i, j], head.low.iat[i, j], head.high.iat[i, j]), head.signed)


def best_mask(head: Headline) -> pd.DataFrame:
    """True at the best estimate of each column with a direction (only when there are several rows)."""
    mask = pd.DataFrame(False, index=head.estimate.index, columns=head.estimate.columns)
    if len(head.estimate) < 2:
        return mask
    for col in head.estimate.columns:
        higher = head.higher_better.get(str(col))
        values = head.estimate[col]
        if higher is None or not values.notna().any():
            continue
        best = values.max() if higher else values.min()
        mask[col] = values == best
    return mask


def bold_mask(head: Headline) -> pd.DataFrame:
    """The cells a table may print in bold: the best of its column *and* significantly so.

    The single place the decision rule lives (HTML headline, ``*.headline.tex``, comparison): a bold n.s. cell
    reads as a winner. When the Headline carries a boolean ``significant`` frame (the statistics issue's
    decision rule), it is read as is; until then: a signed quantity's best is bold only when its CI excludes 0,
    any other best only when its CI does not overlap the CI of any other row of its column (no CIs: the best
    is bold, as for FID).
    """
    best = best_mask(head)
    significant = getattr(head, "significant", None)
    if isinstance(significant, pd.DataFrame):
        return best & significant.reindex_like(best).fillna(False).astype(bool)
    if head.signed:
        return best & ~not_significant(head)
    keep = best.copy()
    for col in best.columns:
        low, high = head.low[col].to_numpy(float), head.high[col].to_numpy(float)
        for i in np.flatnonzero(best[col].to_numpy()):
            if not (np.isfinite(low[i]) and np.isfinite(high[i])):
                continue
            others = [j for j in range(len(low)) if j != i and np.isfinite(low[j]) and np.isfinite(high[j])]
            if low[i] == high[i] or any(low[j] <= high[i] and low[i] <= high[j] for j in others):
                keep.iat[i, best.columns.get_loc(col)] = False
    return keep


def not_significant(head: Headline) -> pd.DataFrame:
    if not head.signed:
        return pd.DataFrame(False, index=head.estimate.index, columns=head.estimate.columns)
    return (head.low <= 0) & (head.high >= 0)


def headline_html(head: Headline, uuid: str) -> str:
    """The grid as an HTML table through pandas Styler (escaped labels; classes ``best`` and ``ns``)."""
    triples = pd.DataFrame(
        [[(head.estimate.iat[i, j], head.low.iat[i, j], head.high.iat[i, j])
          for j in range(head.estimate.shape[1])] for i in range(head.estimate.shape[0])],
        index=head.estimate.index.astype(str), columns=head.estimate.columns.astype(str))
    best, ns = bold_mask(head), not_significant(head)
    classes = pd.DataFrame(
        [["num" + (" best" if best.iat[i, j] else "") + (" ns" if ns.iat[i, j] else "")
          for j in range(best.shape[1])] for i in range(best.shape[0])],
        index=triples.index, columns=triples.columns)
    styler = (triples.style.format(lambda t: _fmt(t, head.signed), escape="html")
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
    if len(head.estimate) > 1 and any(v is not None for v in head.higher_better.values()):
        parts.append("bold: best in its column" + (", its 95% CI excluding 0" if head.signed else
                                                  " (by the metric's direction), its 95% CI overlapping no other "
                                                  "row's"))
    if head.signed:
        parts.append("n.s.: the 95% CI includes 0 (no detectable difference); signs are aligned so that "
                     "positive means better")
    return "; ".join(parts)


def is_finite(value: float) -> bool:
    return value is not None and math.isfinite(value)
