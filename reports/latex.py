"""LaTeX tables that paste into a paper and compile without an overfull box.

One writer for every ``.tex`` export (a run's tables, its ``*.headline.tex``, a comparison's tables):

* booktabs rules; cells are the report's formatted strings, LaTeX-escaped, with true minus signs as ``$-$`` and
  exponents in math mode (``iqabench.analysis.number_format.latex_number``);
* human headers (``ci_method`` -> "CI method", ``t_p_holm`` -> "t p (Holm)"): :func:`human_header`;
* columns that hold one value in every row (a CI method, a direction) move into the caption: they say how the
  table was made, not how rows differ, and they are what pushed ``paired_statistics.tex`` 819 pt past the page;
* the tabular sits in ``\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{...}``: a table
  that fits keeps its natural size, a wider one shrinks to ``\\linewidth`` (needs ``graphicx``);
* but never below :data:`MIN_SCALE` of an article's ``\\linewidth``: a resizebox makes any table "fit", and a
  14-column table shrunk to 0.3 prints 3 pt digits. A table whose estimated natural width would need more is
  split into panels of columns, stacked in the same ``table``, each repeating the row-label columns;
* bold only where the caller's mask allows (``headline.bold_mask``: best *and* significant);
* a label unique per run and table (``tab:<run>-<table>``; ``-headline`` for the headline grid).
"""

from __future__ import annotations

import re

import pandas as pd

from iqabench.analysis.number_format import latex_number

PACKAGES = ("booktabs", "graphicx")  # what a document needs to \input these tables
REFERENCE_LINEWIDTH_PT = 345.0  # \linewidth of LaTeX's article class (10 pt, one column)
MIN_SCALE = 0.6  # the smallest resize a panel may need there: 10 pt text at 6 pt, still readable
_CHAR_PT = 5.0  # Computer Modern 10 pt, per character of a cell; a slight overestimate (calibrated by pdflatex)
_COLUMN_PT = 12.0  # 2 \tabcolsep around every column
_WORDS = {"ci": "CI", "p": "p", "holm": "(Holm)", "n": "n", "fid": "FID", "kid": "KID", "is": "IS", "bt": "BT",
          "relgain": "RelGain", "iqa": "IQA", "clip": "CLIP", "id": "ID", "std": "SD", "se": "SE", "lpips": "LPIPS"}


def human_header(name: object) -> str:
    """A column name as a paper header: words instead of snake_case, acronyms in capitals, ``_ci_low`` as
    "CI low"; names with no underscore pass unchanged (metric names such as ``topiq_nr`` keep theirs when they
    are registered metrics: the caller decides by passing ``keep``)."""
    text = str(name)
    if "_" not in text:
        return text
    return " ".join(_WORDS.get(word.lower(), word) for word in text.split("_") if word)


def escape(text: str) -> str:
    """LaTeX-escape free text the way pandas' Styler escapes cells (``escape="latex"``), then put minus signs,
    exponents and infinities in math mode."""
    from pandas.io.formats.style_render import _escape_latex

    return latex_number(_escape_latex(str(text)))


def label(*parts: str) -> str:
    """``tab:a-b``: only characters LaTeX labels and hyperref anchors accept."""
    return "tab:" + "-".join(re.sub(r"[^A-Za-z0-9:.-]+", "-", p).strip("-") for p in parts if p)


def constant_columns(shown: pd.DataFrame, keep: int = 2) -> list[str]:
    """Text columns with one value in every row (of several rows), except the first ``keep`` columns (the row
    labels): candidates to state once in the caption."""
    if len(shown) < 2:
        return []
    return [c for c in list(shown.columns)[keep:] if shown[c].nunique(dropna=False) == 1
            and not any(ch.isdigit() for ch in str(shown[c].iloc[0]))]


def column_width_pt(shown: pd.DataFrame, column: object, header: str) -> float:
    """Estimated natural width of one column in points: its widest cell or header, plus the column separation."""
    longest = max([len(header), *(len(str(v)) for v in shown[column])])
    return longest * _CHAR_PT + _COLUMN_PT


def column_panels(widths: dict[object, float], labels: list[object]) -> list[list[object]]:
    """The columns in panels whose estimated width needs a scale of at least :data:`MIN_SCALE` at
    :data:`REFERENCE_LINEWIDTH_PT`; every panel starts with the row-label columns ``labels`` (one panel when the
    whole table fits, and a column wider than a panel on its own still gets its own panel)."""
    budget = REFERENCE_LINEWIDTH_PT / MIN_SCALE
    base = sum(widths[c] for c in labels)
    panels: list[list[object]] = [[]]
    for column in (c for c in widths if c not in labels):
        if panels[-1] and base + sum(widths[c] for c in panels[-1]) + widths[column] > budget:
            panels.append([])
        panels[-1].append(column)
    return [[*labels, *panel] for panel in panels]


def _row_labels(columns: list[object], numeric: set[str]) -> list[object]:
    """The leading text columns (generator, baseline, metric ...) that name a row; at least the first column,
    never all of them."""
    leading = next((i for i, c in enumerate(columns) if c in numeric), len(columns))
    return columns[: max(1, min(leading, len(columns) - 1))]


def _tabular(shown: pd.DataFrame, columns: list[object], numeric: set[str], headers: dict[object, str],
             bold: pd.DataFrame | None) -> str:
    align = "".join("r" if c in numeric else "l" for c in columns)
    header = " & ".join(escape(headers[c]) for c in columns) + r" \\"
    lines = []
    for i in range(len(shown)):
        cells = []
        for c in columns:
            text = escape(shown[c].iloc[i])
            if bold is not None and c in bold.columns and bool(bold[c].iloc[i]):
                text = rf"\textbf{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    body = "\n".join(lines)
    return ("\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            f"\\begin{{tabular}}{{{align}}}\n\\toprule\n{header}\n\\midrule\n{body}\n\\bottomrule\n"
            "\\end{tabular}}\n")


def latex_table(shown: pd.DataFrame, *, caption: str, tag: str, numeric: set[str] | None = None,
                bold: pd.DataFrame | None = None, raw_headers: set[str] | None = None) -> str:
    """A booktabs ``table`` of ``shown`` (formatted strings), fitted to ``\\linewidth``, in panels of columns
    when one tabular would have to shrink below :data:`MIN_SCALE` (see the module docstring).

    ``numeric``: right-aligned columns; ``bold``: same shape, True where a cell is set in ``\\textbf``;
    ``raw_headers``: columns whose names are kept as written (metric names).
    """
    numeric = numeric or set()
    raw_headers = raw_headers or set()
    moved = constant_columns(shown)
    notes = [f"{human_header(c) if c not in raw_headers else c}: {shown[c].iloc[0]}" for c in moved]
    columns = [c for c in shown.columns if c not in moved]
    headers = {c: str(c) if c in raw_headers else human_header(c) for c in columns}
    labels = _row_labels(columns, numeric)
    panels = column_panels({c: column_width_pt(shown, c, headers[c]) for c in columns}, labels)
    if len(panels) > 1:
        notes.append(f"In {len(panels)} panels of columns, each repeating "
                     + ", ".join(headers[c] for c in labels))
    full_caption = caption + "".join(f" {n}." for n in notes)
    tabulars = "\\par\\medskip\n".join(_tabular(shown, panel, numeric, headers, bold) for panel in panels)
    return (
        "\\begin{table}\n\\centering\n"
        f"\\caption{{{escape(full_caption)}}}\n\\label{{{tag}}}\n"
        f"{tabulars}\\end{{table}}\n"
    )
