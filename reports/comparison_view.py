"""How the comparison page shows its numbers (presentation only; the statistics live in ``compare.py`` / core).

* Units per quantity (:func:`unit_of`): a merged RelGain is in %, a paired difference in the metric's own units;
  the page says so next to every table instead of leaving a raw-unit difference under a % table.
* The paired-differences table as the page shows it (:func:`paired_display`): the key columns -- comparison,
  metric, difference with its CI, p and Holm-adjusted p -- first and compact enough to read at 1280 px without
  scrolling sideways; the rest (CI method, direction) said once in the footnote. The exported CSV keeps every
  column.
* One colour scale for every run (:func:`merged_figure`): the runs' own heatmaps are autoscaled per run, so the
  page adds one heatmap of the merged grid where the same value is the same colour whatever run it came from.
"""

from __future__ import annotations

import pandas as pd

from iqabench.analysis.labels import generator_aliases
from iqabench.contracts.results import Table

from .headline import Headline

# quantity (headline quantity or table column) -> unit the page prints next to it
UNITS = {  # checked in this order: "spearman" before "score" ("Spearman correlation, target vs score")
    "relgain": "% of the baseline's score (sign aligned: positive = better)",
    "spearman": "Spearman correlation (−1 to 1)",
    "win rate": "share of pairs won (0 to 1)",
    "score": "each metric's own units",
    "difference": "each metric's own units (sign aligned: positive = better)",
    "accuracy": "share of correct images (0 to 1)",
    "overall": "share of correct images (0 to 1)",
    "win_rate": "share of pairs won (0 to 1)",
    "fid": "FID (lower is better)",
    "bt_score": "Bradley-Terry strength (relative; shares sum to 1)",
}


def unit_of(quantity: str) -> str:
    """The unit of a headline quantity or table column (the first known word it contains), else ""."""
    text = quantity.lower()
    return next((unit for word, unit in UNITS.items() if word in text), "")


def paired_display(table: Table) -> Table:
    """The paired-differences table as the page shows it: short labels, key columns first (comparison, metric,
    difference with its CI, Holm-adjusted p, t p), constant columns moved to the footnote; the same decision
    (``difference`` marked n.s. by its Holm p) and the same too-few-units rule as the full table, which the CSV
    export keeps."""
    frame = table.frame
    specs = list(frame["generator"].astype(str)) + list(frame["vs_generator"].astype(str))
    aliases = generator_aliases(specs)
    out = pd.DataFrame({
        "comparison": [f"{aliases[g]} ({r}) vs {aliases[vg]} ({vr})" for g, r, vg, vr in
                       zip(frame["generator"].astype(str), frame["run"], frame["vs_generator"].astype(str),
                           frame["vs_run"], strict=True)],
    })
    if "condition" in frame:
        out["condition"] = frame["condition"].to_numpy()
    arrows = {"lower is better": " (↓ better)", "higher is better": " (↑ better)"}
    out["metric"] = [f"{m}{arrows.get(str(d), '')}" for m, d in zip(frame["metric"], frame["direction"],
                                                                     strict=True)]
    renames = {"difference": "difference", "difference_ci_low": "difference_ci_low",
               "difference_ci_high": "difference_ci_high", "difference_p_holm": "p (Holm)", "t_p": "t p",
               "wilcoxon_p": "Wilcoxon p", "n_units": "n units", "n_images": "n images", "win_rate": "win rate"}
    for column, shown in renames.items():
        if column in frame:
            out[shown] = frame[column].to_numpy()
    effects = {"difference": "p (Holm)"} if "p (Holm)" in out else {}
    return Table(out, footnote=paired_note(table), unit=table.unit, effects=effects,
                 n_units_column="n units" if "n units" in out else "")


def paired_note(table: Table) -> str:
    """The footnote of the shown table: the unit, then what the CSV holds that the page folds away."""
    frame = table.frame
    methods = sorted(set(frame["ci_method"].astype(str))) if "ci_method" in frame else []
    extra = f" CI method: {', '.join(methods)}." if methods else ""
    text = (f"Unit: {UNITS['difference']}. " + table.footnote + extra
            + " The CSV export holds every column (unit, ci_method, per-row directions).").strip()
    specs = list(frame["generator"].astype(str)) + list(frame["vs_generator"].astype(str)) if len(frame) else []
    for spec, alias in sorted(generator_aliases(specs).items(), key=lambda kv: -len(kv[0])):
        text = text.replace(spec, alias)  # the footnote names generators the way the table does
    return text


def merged_figure(head: Headline, title: str):
    """A heatmap of a merged grid on one colour scale for every run (``iqabench.analysis.plotting.heatmap_figure``)."""
    from iqabench.analysis.plotting import heatmap_figure

    shares = unit_of(head.quantity).startswith("share")
    if not (head.signed or shares):
        return None  # raw scores of different metrics share no colour scale (each column has its own units)
    estimate = head.estimate.copy()
    estimate.index.name = "generator (run)"
    estimate.columns.name = estimate.columns.name or "metric"
    bounds = {"low": head.low.set_axis(estimate.index), "high": head.high.set_axis(estimate.index)}
    kwargs = {"scale": "diverging"} if head.signed else {"scale": "sequential", "vmin": 0.0, "vmax": 1.0}
    if "win" in head.quantity.lower():  # a win rate's "no preference" is 0.5: the neutral colour sits there
        kwargs = {"scale": "diverging", "center": 0.5, "spread": 0.5}
    significant = head.significant.set_axis(estimate.index) if head.signed else None
    return heatmap_figure(estimate, title, **bounds, **kwargs, significant=significant,
                          caption=f"{title}: every run's rows on one colour scale (the runs' own figures below "
                                  "are scaled per run).")


def merged_svg(head: Headline, index: int):
    """:func:`merged_figure` as inline SVG markup, or None when the quantity has no shared scale."""
    from markupsafe import Markup

    from .persist import figure_svg
    from .sanitize import sanitize_svg

    fig = merged_figure(head, f"{head.quantity}, all runs")
    if fig is None:
        return None
    return Markup(sanitize_svg(figure_svg(fig, salt=f"comparison/{index}")))


def aliased(head: Headline) -> Headline:
    """A copy of a merged headline whose ``spec (run)`` rows read ``label (run)`` (``iqabench.analysis.labels``)."""
    from .headline import relabel

    rows = [str(r) for r in head.estimate.index]
    specs = [r.rsplit(" (", 1)[0] for r in rows]
    aliases = generator_aliases(specs)
    return relabel(head, [aliases[s] + r[len(s):] for s, r in zip(specs, rows, strict=True)])
