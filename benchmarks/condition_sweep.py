"""Quality-condition sweep: does asking for a higher target percentile give higher scores, on every metric?

IQA-Adapter paper Sec. 4.3 and supplementary Sec. 12 (Figs. 4a, 10, 16): the
adapter generates each prompt and seed at target percentiles of its training
score distribution (default 1, 5, 10, 25, 50, 75, 90, 95, 99); a metric panel
scores every image. We report per-target score distributions, mean curves with
the baseline (unconditioned model) level, and the Spearman / Pearson
correlation between target and score per metric (Fig. 16's heatmap has one row
per adapter). Correlations are computed over individual images, not over the
nine means, so their p-values mean something.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iqabench.analysis.decisions import level_table, long_headline
from iqabench.benchmark import AnalysisContext, Result, register_benchmark
from iqabench.contracts.generators import GeneratorPool
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import metric_info

from .sweeps import (
    DEFAULT_TARGETS,
    Slot,
    SweepBenchmark,
    grid_refs,
    identical_settings,
    mean_with_ci,
    means_footnote,
    missing_scores_note,
    new_figure,
    parse_targets,
    sweep_per_item,
    sweep_slots,
    target_label,
)


def sweep_targets(spec: RunSpec) -> list[float]:
    return parse_targets(spec.options.get("targets", list(DEFAULT_TARGETS)))


def target_slots(spec: RunSpec, generators: GeneratorPool, benchmark: str, targets: list[float], *,
                 with_baseline: bool = True) -> list[Slot]:
    """Baseline images plus one image per prompt x seed x target (shared with fr-distances)."""
    return sweep_slots(spec, generators, benchmark, [{"target": target_label(t)} for t in targets],
                       with_baseline=with_baseline, param_names=("target",))


def target_correlations(frame: pd.DataFrame, by: str = "target") -> pd.DataFrame:
    """Spearman and Pearson correlation of ``by`` vs score per (generator, metric), over individual images.

    Over images the swept value is tied within each target, so even a perfectly
    monotone sweep gives |rho| < 1 when seeds differ; ``spearman_of_means``
    (over the per-target means) is 1 exactly for a monotone mean curve. The
    ``aligned_*`` columns flip the sign for lower-is-better metrics, so +1
    always means "a higher target gives a better score".

    ``spearman`` and ``aligned_spearman`` carry a 95% bootstrap CI
    (:func:`iqabench.analysis.stats.spearman_ci`): the correlation of the ranks is recomputed on
    resampled *prompts* (all targets and seeds of a drawn prompt together, as
    they are not independent). ``spearman_p`` tests it at the same unit: a
    cluster permutation test (:func:`iqabench.analysis.stats.cluster_permutation_p`,
    scores shuffled within each prompt), not scipy's image-level p-value, which
    counts ``targets x seeds`` images of one prompt as independent.
    """
    from scipy import stats

    from iqabench.analysis.stats import cluster_permutation_p, inference_unit, pearson, spearman_ci

    rows = []
    data = frame[(frame.role == "generator") & np.isfinite(frame.score.astype(float))]
    for (generator, metric), group in data.groupby(["generator", "metric"], sort=False):
        x = group[by].to_numpy(float)
        y = group.score.to_numpy(float)
        row = {"generator": generator, "metric": metric, "n": int(x.size), "spearman": np.nan,
               "spearman_ci_low": np.nan, "spearman_ci_high": np.nan,
               "spearman_p": np.nan, "pearson": np.nan, "ci_method": "none"}
        prompts = group["prompt_id"].to_numpy() if "prompt_id" in group else None
        row.update(n_units=int(len(set(prompts))) if prompts is not None else int(x.size),
                   unit=inference_unit(prompts), n_images=int(x.size))
        if x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho = stats.spearmanr(x, y)
            r = stats.pearsonr(x, y)
            est = spearman_ci(x, y, prompts)
            p = cluster_permutation_p(pearson, stats.rankdata(x), stats.rankdata(y), prompts)
            row.update(spearman=float(rho.statistic), spearman_p=p,
                       pearson=float(r.statistic), spearman_ci_low=est.ci_low,
                       spearman_ci_high=est.ci_high, ci_method=est.method)
        means = group.groupby(by).score.mean()
        row["spearman_of_means"] = np.nan
        if means.size >= 3 and np.ptp(means.to_numpy()) > 0:
            row["spearman_of_means"] = float(stats.spearmanr(means.index.to_numpy(float), means.to_numpy()).statistic)
        sign = -1.0 if _lower(metric) else 1.0
        row["aligned_spearman"] = sign * row["spearman"]
        bounds = sorted([sign * row["spearman_ci_low"], sign * row["spearman_ci_high"]])
        row["aligned_spearman_ci_low"], row["aligned_spearman_ci_high"] = bounds
        row["aligned_spearman_of_means"] = sign * row["spearman_of_means"]
        rows.append(row)
    return pd.DataFrame(rows)


#: the correlation table's numbers that measure the condition's effect (blanked where every target made the
#: same pixels: issue 25, identical sides are never a measured zero)
CORRELATION_EFFECTS = ("spearman", "spearman_ci_low", "spearman_ci_high", "spearman_p", "pearson", "spearman_of_means",
                       "aligned_spearman", "aligned_spearman_ci_low", "aligned_spearman_ci_high",
                       "aligned_spearman_of_means")


def blank_identical_correlations(ctx: AnalysisContext, frame: pd.DataFrame, correlations: pd.DataFrame,
                                 by: list[str], setting: str) -> tuple[pd.DataFrame, list[str]]:
    """``correlations`` with the rows blanked whose every ``setting`` made the same pixels, and the notes."""
    from iqabench.analysis.identical import blank_rows

    same = identical_settings(ctx, frame, by, setting)
    if correlations.empty:
        return correlations, list(same.values())
    rows = [tuple(r) for r in correlations[by].itertuples(index=False)]
    return blank_rows(correlations, [r in same for r in rows], CORRELATION_EFFECTS), list(same.values())


def correlation_table(out: pd.DataFrame):
    """The correlation table typed: ``aligned_spearman`` is the effect (0 = the setting does nothing)."""
    from iqabench.analysis.decisions import decision_sentence, effect_table, unit_sentence
    from iqabench.analysis.stats import describe_method

    if out.empty:
        return effect_table(out, {})
    unit = "/".join(dict.fromkeys(out.unit))
    note = ("aligned_spearman: Spearman correlation of the swept value and the score over images, sign flipped for "
            "lower-is-better metrics (positive = a higher setting gives better scores). "
            + describe_method(out["ci_method"].tolist(), helper="spearman_ci") + " "
            + unit_sentence(unit, out.n_units.to_numpy(float), int(out.n_images.max()))
            + " spearman_p: two-sided cluster permutation test (scores shuffled within each prompt, "
            "iqabench.analysis.stats.cluster_permutation_p). " + decision_sentence())
    return effect_table(out, {"aligned_spearman": "spearman_p"}, footnote=note, unit=unit)


def correlation_headline(table, n_images: int | None = None):
    """The terminal and report headline: generator x metric, aligned so that positive = the condition works."""
    return long_headline(
        "correlation", table.frame, row_key="generator", column_key="metric", value="aligned_spearman",
        quantity="Spearman correlation, target vs score (aligned: + = better)", signed=True, higher_better=True,
        footnote=table.footnote, p_column="spearman_p", unit=table.unit, n_images=n_images)


def baseline_levels(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean baseline score (with CI) per (generator, metric): the horizontal line of Figs. 4a and 13."""
    return mean_with_ci(frame[frame.role == "baseline"], ["generator", "metric"])


def curves_figure(means: pd.DataFrame, baselines: pd.DataFrame, metrics: list[str], x: str, xlabel: str,
                  series: list[str] | None = None):
    """Mean score vs ``x`` per metric, one line per series (generator, or generator+target), CI band and
    each generator's baseline level as a dashed line."""
    from iqabench.analysis.plotting import figure_legend, style_axes

    fig, axes = new_figure(len(metrics))
    series = series or ["generator"]

    def joined(label: object) -> str:
        return " | ".join(str(v) for v in (label if isinstance(label, tuple) else (label,)))

    # one legend for all panels: every entry labelled in one set, so two series never share an entry
    short = _short_labels([*(joined(k) for k, _ in means.groupby(series, sort=False)), *baselines.get("generator", [])])
    for ax, metric in zip(axes, metrics, strict=True):
        data = means[means.metric == metric]
        for label, group in data.groupby(series, sort=False):
            group = group.sort_values(x)
            line = ax.plot(group[x], group["mean"], marker="o", markersize=3, label=short[joined(label)])[0]
            ax.fill_between(group[x], group.mean_ci_low, group.mean_ci_high, color=line.get_color(), alpha=0.15)
        rows = baselines[baselines.metric == metric].drop_duplicates(["generator"])
        levels = rows.drop_duplicates(["mean"])  # generators sharing one base model share one baseline line
        for row in levels.itertuples():  # labelled as the baseline, not with the generator's name
            ax.axhline(row.mean, linestyle="--", color="grey", linewidth=1,
                       label="baseline (no adapter)" if len(levels) == 1 else f"baseline · {short[str(row.generator)]}")
        direction = "lower is better" if _lower(metric) else "higher is better"
        ax.set_title(f"{metric} ({direction})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean score")
        style_axes(ax)
    fig.tight_layout()
    figure_legend(fig, axes)  # under the panels, never on the curves; one entry per line
    fig.set_label(f"Mean score (line) and its 95% CI (band) against the {xlabel}, one panel per metric; the "
                  "dashed line is the baseline (same prompts and seeds, no adapter).")
    return fig


def distributions_figure(frame: pd.DataFrame, metrics: list[str]):
    """Per-metric score distribution at every target (boxes), generators side by side (Fig. 10)."""
    import seaborn as sns

    from iqabench.analysis.plotting import figure_legend, style_axes

    fig, axes = new_figure(len(metrics))
    data = frame[(frame.role == "generator") & np.isfinite(frame.score.astype(float))].copy()
    data["target"] = data.target.map(target_label)
    short = _short_labels(data.generator)
    data["generator"] = data.generator.map(lambda g: short[str(g)])
    order = [target_label(t) for t in sorted(frame[frame.role == "generator"].target.unique())]
    for ax, metric in zip(axes, metrics, strict=True):
        subset = data[data.metric == metric]
        if subset.empty:
            ax.set_title(f"{metric}: no scores")
            continue
        sns.boxplot(data=subset, x="target", y="score", hue="generator", order=order, ax=ax, fliersize=1.5)
        ax.set_title(metric)
        style_axes(ax)
    fig.tight_layout()
    figure_legend(fig, axes)
    fig.set_label("Distribution of image scores at each target percentile (box: quartiles, whiskers: 1.5 IQR), "
                  "one panel per metric, generators side by side.")
    return fig


def correlation_heatmap(correlations: pd.DataFrame, metrics: list[str], significant: pd.DataFrame | None = None):
    """Generators x metrics heatmap of ``aligned_spearman`` with its CI; cells whose CI includes 0 are hatched.

    Aligned: sign flipped for lower-is-better metrics, so blue always means "a
    higher target gives better scores" (the condition works) and red that it
    backfires, whatever the metric's direction. None when no correlation is defined.
    """
    from iqabench.analysis.plotting import heatmap_figure

    def grid(column: str) -> pd.DataFrame:
        matrix = correlations.pivot(index="generator", columns="metric", values=column).reindex(columns=metrics)
        matrix.index.name, matrix.columns.name = "generator", "metric"
        return matrix

    matrix = grid("aligned_spearman")
    if not matrix.notna().to_numpy().any():
        return None
    return heatmap_figure(
        matrix, "Spearman correlation, target vs score (aligned)", fmt=".2f", spread=1.0,  # one scale for all runs
        low=grid("aligned_spearman_ci_low"), high=grid("aligned_spearman_ci_high"),
        significant=significant,  # full specs, as the matrix: heatmap_figure labels both alike
        caption="Spearman correlation between the target percentile and each image's score, sign flipped for "
                "lower-is-better metrics, with its 95% CI (bootstrap over prompts): positive (blue) = a higher "
                "target gives better scores, the condition works; negative (red) = it backfires. Hatched, faded "
                "cells: not significant (Holm-adjusted cluster permutation p >= 0.05 over the table's cells).")


def aligned_spearman_summary(correlations: pd.DataFrame) -> dict[str, float]:
    """``{"generator | metric": aligned rho}`` for the run summary, aligned like the heatmap and the headline.

    A raw piqe rho of +0.46 is painted -0.46 (red, the condition backfires) on the heatmap; the summary must not
    say the opposite.
    """
    return {f"{r.generator} | {r.metric}": float(r.aligned_spearman) for r in correlations.itertuples()}


def _short_labels(texts: object, limit: int = 40) -> dict[str, str]:
    """Legend and axis labels of one figure: checkpoint paths as file stems
    (``iqabench.analysis.labels.figure_labels``),
    cut with an ellipsis, unique within the figure."""
    from iqabench.analysis.labels import figure_labels

    return figure_labels(texts, limit)


def _lower(metric: str) -> bool:
    try:
        return metric_info(metric).lower_better
    except Exception:
        return False


@register_benchmark("condition-sweep",
                    description="Scores vs IQA-Adapter target percentile, with correlations (paper Figs. 4a, 10, 16)")
class ConditionSweep(SweepBenchmark):
    options = {
        "targets": "quality targets to condition on",
    }

    def slots(self, spec: RunSpec, generators: GeneratorPool) -> list[Slot]:
        return target_slots(spec, generators, self.name, sweep_targets(spec))

    def analyze(self, ctx: AnalysisContext) -> Result:
        metrics, frame = self.score_table(ctx)
        generated = frame[frame.role == "generator"]
        means = mean_with_ci(generated, ["generator", "metric", "target"])
        baselines = baseline_levels(frame)
        correlations, same = blank_identical_correlations(ctx, frame, target_correlations(frame), ["generator"],
                                                          "target")
        result = Result(self.name, notes=same)
        result.notes.append(
            "Each prompt and seed is generated at every target percentile of the adapter's training-set score "
            "distribution; the dashed line is the baseline model (same prompts and seeds, no adapter). Spearman and "
            "Pearson correlations are over individual images (target percentile vs score); for lower-is-better "
            "metrics a negative correlation means the condition works, aligned_spearman flips that sign. "
            "spearman_of_means correlates the target with the per-target mean score (1 = monotone mean curve).")
        if note := missing_scores_note(frame, "generation or scoring failed"):
            result.notes.append(note)
        result.add_table("scores_by_target", level_table(means, footnote=means_footnote(means)))
        result.add_table("baseline", level_table(baselines, footnote=means_footnote(baselines)))
        table = result.add_table("correlation", correlation_table(correlations))
        if len(table.frame):
            result.headlines.append(correlation_headline(table, len(set(ctx.image_keys))))
        frame["condition"] = [target_label(t) if role == "generator" else "baseline"
                              for role, t in zip(frame.role, frame.get("target", np.nan), strict=True)]
        result.per_item = sweep_per_item(frame)
        result.tables["per_image"] = frame.pivot_table(
            index=["generator", "condition", "prompt_id", "seed"], columns="metric", values="score",
            sort=False).reset_index()
        result.figures["mean_score_vs_target"] = curves_figure(means, baselines, metrics, "target",
                                                               "target percentile")
        result.figures["score_distributions"] = distributions_figure(frame, metrics)
        # aligned: sign flipped for lower-is-better metrics, so blue always means "a higher target gives better
        # scores" (the condition works) and red that it backfires, whatever the metric's direction
        figure = correlation_heatmap(correlations, metrics,
                                     result.headline.significant if result.headlines else None)
        if figure is not None:
            result.figures["correlation_heatmap"] = figure
        result.grids["targets"] = grid_refs(ctx, frame, "condition")
        result.summary = {
            "generators": list(dict.fromkeys(frame.generator)), "metrics": metrics,
            "targets": [target_label(t) for t in sweep_targets(ctx.spec)], "n_images": len(set(ctx.image_keys)),
            "aligned_spearman": aligned_spearman_summary(correlations),
        }
        return result
