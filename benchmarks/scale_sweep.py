"""Adapter-scale sweep: how the quality branch's weight lambda trades condition strength against the base model.

IQA-Adapter paper, supplementary Sec. 16 / Fig. 13: lambda in the decoupled
cross-attention ``out = Attn(Q,K,V) + lambda * Attn(Q,K',V')`` is swept from
0.05 to 1.0 (9 values) at a low and a high target; mean metric scores vs lambda
are drawn against the baseline level. With lambda -> 0 both curves must meet
the baseline (lambda = 0 *is* the base model), and the gap between the low- and
high-target curves should widen with lambda.

Items whose (target, lambda) equal the generator's defaults are planned without
those params, so they reuse images of condition-sweep and relgain runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iqabench.analysis.decisions import level_table, long_headline
from iqabench.benchmark import AnalysisContext, Result, register_benchmark
from iqabench.contracts.generators import GeneratorPool
from iqabench.contracts.specs import RunSpec

from .condition_sweep import (
    baseline_levels,
    blank_identical_correlations,
    correlation_table,
    curves_figure,
    target_correlations,
)
from .sweeps import (
    Slot,
    SweepBenchmark,
    grid_refs,
    identical_settings,
    mean_with_ci,
    means_footnote,
    missing_scores_note,
    parse_number_list,
    parse_targets,
    sweep_per_item,
    sweep_slots,
    target_label,
)

# Nine lambdas from 0.05 to 1.0 (paper Fig. 13 spans this range with 9 points; the exact inner values are ours).
DEFAULT_SCALES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
DEFAULT_SCALE_TARGETS: tuple[float, ...] = (5, 99)
#: the gap table's numbers that measure the condition (blanked at a lambda where the low and the high target made
#: the same pixels, e.g. lambda = 0, the base model: issue 25, identical sides are never a measured zero)
GAP_EFFECTS = ("gap", "gap_ci_low", "gap_ci_high", "aligned_gap", "aligned_gap_ci_low", "aligned_gap_ci_high",
               "p_value")


def sweep_scales(spec: RunSpec) -> list[float]:
    return parse_number_list(spec.options.get("scales", list(DEFAULT_SCALES)), name="scales", low=0.0, high=10.0)


def scale_targets(spec: RunSpec) -> list[float]:
    return parse_targets(spec.options.get("scale_targets", list(DEFAULT_SCALE_TARGETS)), name="scale_targets")


def scale_gap(means: pd.DataFrame, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (generator, metric, lambda): mean score at the highest target minus at the lowest (the spread
    the condition buys at that lambda; it should grow with lambda).

    With ``frame`` (per-image scores of the swept images) the gap also gets a
    95% CI: it is the mean paired difference over the (prompt, seed) items
    scored at both targets, bootstrapped over prompts
    (:func:`iqabench.analysis.stats.mean_ci`; seeds of one prompt are not independent),
    and ``aligned_gap`` flips its sign for lower-is-better metrics so that
    positive always means "the higher target scores better".
    """
    from iqabench.analysis.stats import mean_ci, unit_test

    from .condition_sweep import _lower

    rows = []
    for (generator, metric, scale), group in means.groupby(["generator", "metric", "scale"], sort=False):
        group = group.sort_values("target")
        if len(group) < 2:
            continue
        low_t, high_t = group.target.iloc[0], group.target.iloc[-1]
        row = {"generator": generator, "metric": metric, "scale": scale,
               "low_target": target_label(low_t), "high_target": target_label(high_t),
               "gap": float(group["mean"].iloc[-1] - group["mean"].iloc[0])}
        if frame is not None:
            mine = frame[(frame.generator == generator) & (frame.metric == metric) & (frame.scale == scale)]
            at = {t: mine[mine.target == t].set_index(["prompt_id", "seed"]).score for t in (low_t, high_t)}
            shared = at[low_t].index.intersection(at[high_t].index)
            diff = at[high_t].loc[shared].to_numpy(float) - at[low_t].loc[shared].to_numpy(float)
            est = mean_ci(diff, [p for p, _ in shared])
            test = unit_test(diff, [p for p, _ in shared])  # paired t on per-prompt mean differences
            sign = -1.0 if _lower(str(metric)) else 1.0
            row.update(gap=est.value, gap_ci_low=est.ci_low, gap_ci_high=est.ci_high,
                       direction="lower is better" if sign < 0 else "higher is better", aligned_gap=sign * est.value,
                       n=est.n, p_value=test.p_value, n_units=test.n_units, unit=test.unit,
                       n_images=test.n_images, ci_method=est.method)
            row["aligned_gap_ci_low"], row["aligned_gap_ci_high"] = sorted([sign * est.ci_low, sign * est.ci_high])
        rows.append(row)
    return pd.DataFrame(rows)


def gap_footnote(gaps: pd.DataFrame) -> str:
    """How a gap table's brackets, tests and marks were made."""
    from iqabench.analysis.decisions import decision_sentence, unit_sentence
    from iqabench.analysis.stats import describe_method

    if gaps.empty or "ci_method" not in gaps:
        return ""
    return ("gap = mean over (prompt, seed) items of the score at the highest target minus at the lowest; "
            "aligned_gap flips it for lower-is-better metrics (positive = the higher target scores better). "
            + describe_method(gaps["ci_method"].tolist()) + " "
            + unit_sentence("/".join(dict.fromkeys(gaps.unit)), gaps.n_units.to_numpy(float),
                            int(gaps.n_images.max()))
            + " p_value: paired t-test on per-unit mean differences. " + decision_sentence())


def gap_table(gaps: pd.DataFrame):
    """The gap table typed: ``aligned_gap`` is the effect, Holm over the table's rows."""
    from iqabench.analysis.decisions import effect_table

    if gaps.empty or "p_value" not in gaps:
        return effect_table(gaps, {})
    return effect_table(gaps, {"aligned_gap": "p_value"}, footnote=gap_footnote(gaps),
                        unit="/".join(dict.fromkeys(gaps.unit)))


def gap_at_max_scale(gaps: pd.DataFrame) -> pd.DataFrame:
    """The headline: the aligned gap at the largest lambda, one row per (generator, metric)."""
    if gaps.empty:
        return gaps
    top = gaps[gaps.scale == gaps.scale.max()].reset_index(drop=True)
    return top[[c for c in ("generator", "metric", "direction", "scale", "low_target", "high_target", "aligned_gap",
                            "aligned_gap_ci_low", "aligned_gap_ci_high", "gap", "p_value", "n", "n_units", "unit",
                            "n_images", "ci_method") if c in top]]


def gap_at_max_table(every):
    """The max-lambda rows of the typed gap table, keeping its Holm-adjusted p-values: the headline and this table
    mark a cell exactly as ``target_gap`` marks the same estimate (a subset is not re-adjusted as a smaller family)."""
    from iqabench.contracts.results import Table

    frame = every.frame
    top = gap_at_max_scale(frame)
    held = [c for c in every.effects.values() if c in frame]
    if len(top) and held:
        top = top.join(frame[frame.scale == frame.scale.max()].reset_index(drop=True)[held])
    note = every.footnote + (" Holm-adjusted over every row of target_gap (one family), so a cell here carries the "
                             "mark of the same estimate there." if held else "")
    return Table(top, footnote=note.strip(), unit=every.unit, effects={k: v for k, v in every.effects.items()
                                                                      if v in top}, p_values=dict(every.p_values))


GAP_QUANTITY = "Score gap, highest minus lowest target, at the largest lambda (aligned: + = better)"


def gap_headline(top, n_images: int | None = None):
    """The run's headline: the aligned gap at the largest lambda, generator x metric, Holm over its cells."""
    return long_headline("gap_at_max_lambda", top.frame, row_key="generator", column_key="metric",
                         value="aligned_gap", quantity=GAP_QUANTITY, signed=True, higher_better=True,
                         footnote=top.footnote, p_column="p_value", unit=top.unit, n_images=n_images,
                         p_adjusted_column=top.effects.get("aligned_gap"))


def aligned_gap_summary(gaps: pd.DataFrame) -> dict[str, float]:
    """``{"generator | metric": aligned gap}`` at the largest lambda, for the run summary.

    Aligned (sign flipped for lower-is-better metrics) like the headline table and the terminal, so a positive
    number means "the higher target scores better" for piqe as for entropy; a raw gap would read the other way.
    """
    if gaps.empty:
        return {}
    value = "aligned_gap" if "aligned_gap" in gaps else "gap"
    top = gaps[gaps.scale == gaps.scale.max()]
    return {f"{r.generator} | {r.metric}": float(getattr(r, value)) for r in top.itertuples()}


@register_benchmark("scale-sweep",
                    description="Mean scores vs adapter scale lambda at a low and a high target (paper Fig. 13)")
class ScaleSweep(SweepBenchmark):
    options = {
        "scales": "adapter scales to sweep",
        "scale_targets": "quality targets at each scale",
    }

    def slots(self, spec: RunSpec, generators: GeneratorPool) -> list[Slot]:
        points = [{"target": target_label(t), "scale": s} for t in scale_targets(spec) for s in sweep_scales(spec)]
        return sweep_slots(spec, generators, self.name, points, param_names=("target", "scale"))

    def analyze(self, ctx: AnalysisContext) -> Result:
        metrics, frame = self.score_table(ctx)
        generated = frame[frame.role == "generator"]
        means = mean_with_ci(generated, ["generator", "metric", "target", "scale"])
        baselines = baseline_levels(frame)
        same: list[str] = []
        trends = []
        for t in sorted(generated.target.unique()):
            at = generated[generated.target == t]
            trend_t, notes = blank_identical_correlations(ctx, at, target_correlations(at, by="scale"), ["generator"],
                                                          "scale")
            trends.append(trend_t.assign(target=target_label(t)))
            same += notes
        trend = pd.concat(trends, ignore_index=True)
        result = Result(self.name)
        result.notes.append(
            "lambda weighs the quality branch of the decoupled cross-attention (lambda = 0 is the base model). "
            "Lines: mean score per lambda at each target with a 95% bootstrap band; dashed: the baseline model. "
            "gap = mean at the highest target minus mean at the lowest, per lambda. Spearman of lambda vs score is "
            "over individual images, per target.")
        if note := missing_scores_note(frame):
            result.notes.append(note)
        frame["condition"] = [f"{target_label(t)}, lambda={s:g}" if role == "generator" else "baseline"
                              for role, t, s in zip(frame.role, frame.target, frame.scale, strict=True)]
        labelled = means.assign(target=means.target.map(target_label))
        result.add_table("scores_by_scale", level_table(labelled, footnote=means_footnote(labelled)))
        result.add_table("baseline", level_table(baselines, footnote=means_footnote(baselines)))
        gaps = scale_gap(means, generated)
        flat = identical_settings(ctx, generated, ["generator", "scale"], "target")
        if len(gaps):
            from iqabench.analysis.identical import blank_rows

            gaps = blank_rows(gaps, [(r.generator, r.scale) in flat for r in gaps.itertuples()], GAP_EFFECTS)
        result.notes[:0] = list(flat.values()) + same
        every = gap_table(gaps)  # Holm over every (generator, metric, lambda) row: one family
        top = result.add_table("gap_at_max_lambda", gap_at_max_table(every))
        if "p_value" in top.frame:
            result.headlines.append(gap_headline(top, len(set(ctx.image_keys))))
        result.add_table("target_gap", every)
        result.add_table("scale_correlation", correlation_table(trend))
        result.per_item = sweep_per_item(frame)
        result.tables["per_image"] = frame.pivot_table(
            index=["generator", "condition", "prompt_id", "seed"], columns="metric", values="score",
            sort=False).reset_index()
        result.figures["mean_score_vs_scale"] = curves_figure(labelled, baselines, metrics, "scale", "lambda",
                                                              series=["generator", "target"])
        result.grids["scales"] = grid_refs(ctx, frame, "condition")
        result.summary = {
            "generators": list(dict.fromkeys(frame.generator)), "metrics": metrics,
            "scales": sweep_scales(ctx.spec), "targets": [target_label(t) for t in scale_targets(ctx.spec)],
            "n_images": len(set(ctx.image_keys)),
            "aligned_gap_at_max_scale": aligned_gap_summary(gaps),
        }
        if not np.isfinite(means["mean"].to_numpy(float)).any():
            result.notes.append("No image could be scored; see the failures in the run folder.")
        return result
