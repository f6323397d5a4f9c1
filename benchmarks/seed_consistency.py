"""Seed consistency: is the gain over the baseline a property of most generations or of a few lucky seeds?

IQA-Adapter paper, supplementary Sec. 17 / Fig. 14: P prompts x S seeds (the
paper uses 25 x 100), each generation compared with the baseline image of the
*same* prompt and seed. We keep the per-generation RelGain (the paper's
RelGain before averaging) and report its distribution: mean, median, the share
of generations improved and how many gains are near zero. The plan is the
RelGain plan, so both benchmarks share every image.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from iqabench.analysis.decisions import decision_sentence, effect_table, long_headline, unit_sentence
from iqabench.analysis.identical import blank_rows
from iqabench.analysis.stats import RELGAIN_EPS, describe_method, mean_ci, relative_gains, unit_test
from iqabench.benchmark import AnalysisContext, Result, register_benchmark
from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import GeneratorPool
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import metric_info

from .sweeps import Slot, SweepBenchmark, grid_refs, new_figure, sweep_slots

# |RelGain| below this many percent counts as "no real change" (option near_zero=...).
NEAR_ZERO_PERCENT = 1.0
#: the summary's numbers that measure the gain (blanked where both sides made the same pixels)
SUMMARY_EFFECTS = ("mean", "mean_ci_low", "mean_ci_high", "p_value", "median", "std", "q05", "q95",
                   "improved_share", "worse_share", "near_zero_share")


def seeded_spec(spec: RunSpec) -> RunSpec:
    """``--option n_seeds=100`` means seeds 0..99; otherwise ``--seeds``, which must name at least two."""
    n_seeds = spec.options.get("n_seeds")
    if n_seeds is not None:
        if int(n_seeds) < 2:
            raise UserInputError(f"option n_seeds={n_seeds!r}: seed consistency needs at least 2 seeds per prompt")
        return replace(spec, seeds=list(range(int(n_seeds))))
    if len(spec.seeds) < 2:
        raise UserInputError("seed-consistency needs several seeds per prompt: pass e.g. --seeds 0-99 --limit 25 "
                             "(the paper's 25 prompts x 100 seeds) or --option n_seeds=100")
    return spec


def per_generation_gains(frame: pd.DataFrame, lower_better: dict[str, bool]) -> pd.DataFrame:
    """One row per (generator, metric, prompt, seed): baseline score, generator score, RelGain (%).

    ``frame`` is the long score table (columns generator, role, prompt_id, seed,
    metric, score, ...); the baseline row of the same prompt and seed is the reference.
    """
    key = ["generator", "metric", "prompt_id", "seed"]
    base = frame[frame.role == "baseline"].set_index(key)["score"]
    method = frame[frame.role == "generator"].drop_duplicates(key).set_index(key)
    paired = method.join(base.rename("baseline_score"), how="left").reset_index()
    paired = paired.rename(columns={"score": "generator_score"})
    gains = np.full(len(paired), np.nan)
    usable = np.zeros(len(paired), dtype=bool)
    for metric, index in paired.groupby("metric").groups.items():
        rows = paired.loc[index]
        result = relative_gains(rows.baseline_score.to_numpy(float), rows.generator_score.to_numpy(float),
                                lower_better[metric])
        positions = paired.index.get_indexer(index)
        gains[positions] = result.gains
        usable[positions] = result.usable
    paired["relgain"] = gains
    paired["usable"] = usable
    return paired[["generator", "metric", "prompt_id", "prompt", "seed", "baseline_score", "generator_score",
                   "relgain", "usable"]]


def summarize_gains(gains: pd.DataFrame, near_zero: float = NEAR_ZERO_PERCENT) -> pd.DataFrame:
    """Distribution of per-generation RelGain per (generator, metric).

    improved_share counts gains > 0 among usable ones; near_zero_share counts
    |gain| < ``near_zero`` percent (changes too small to matter); excluded
    counts baseline scores within RELGAIN_EPS of zero (relative gain undefined).
    """
    rows = []
    for (generator, metric), group in gains.groupby(["generator", "metric"], sort=False):
        finite = np.isfinite(group.baseline_score.to_numpy(float)) & np.isfinite(group.generator_score.to_numpy(float))
        values = group.relgain.to_numpy(float)
        # several seeds per prompt: the CI resamples prompts (iqabench.analysis.stats.mean_ci)
        est = mean_ci(values, group.prompt_id.to_numpy())
        test = unit_test(values, group.prompt_id.to_numpy())  # one-sample t on per-prompt mean gains
        values = values[np.isfinite(values)]
        low, high = est.ci_low, est.ci_high
        n = int(values.size)
        rows.append({
            "generator": generator, "metric": metric, "n": n,
            "mean": float(values.mean()) if n else np.nan, "mean_ci_low": low, "mean_ci_high": high,
            "p_value": test.p_value, "n_units": test.n_units, "unit": test.unit, "n_images": test.n_images,
            "median": float(np.median(values)) if n else np.nan,
            "std": float(values.std(ddof=1)) if n > 1 else np.nan,
            "q05": float(np.quantile(values, 0.05)) if n else np.nan,
            "q95": float(np.quantile(values, 0.95)) if n else np.nan,
            "improved_share": float((values > 0).mean()) if n else np.nan,
            "worse_share": float((values < 0).mean()) if n else np.nan,
            "near_zero_share": float((np.abs(values) < near_zero).mean()) if n else np.nan,
            "n_near_zero_baseline_excluded": int((finite & ~group.usable.to_numpy(bool)).sum()),
            "n_missing": int((~finite).sum()), "ci_method": est.method,
        })
    return pd.DataFrame(rows)


def summary_footnote(summary: pd.DataFrame) -> str:
    """How the seed_consistency table's brackets, tests and marks were made (the one statement of the method)."""
    unit = "/".join(dict.fromkeys(summary["unit"])) if len(summary) else ""
    return (describe_method(summary["ci_method"].tolist() if len(summary) else []) + " "
            + unit_sentence(unit, summary["n_units"].to_numpy(float) if len(summary) else None,
                            int(summary["n_images"].max()) if len(summary) else None)
            + " p_value: one-sample t-test of mean RelGain 0 on the per-prompt mean gains. " + decision_sentence())


def per_prompt_summary(gains: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: mean and spread of RelGain over seeds, and the share of seeds improved."""
    usable = gains[np.isfinite(gains.relgain)]
    grouped = usable.groupby(["generator", "metric", "prompt_id"], sort=False)
    out = grouped.relgain.agg(mean="mean", std="std", min="min", max="max", n="count").reset_index()
    out["improved_share"] = grouped.relgain.apply(lambda s: float((s > 0).mean())).to_numpy()
    prompts = gains.drop_duplicates("prompt_id").set_index("prompt_id").prompt
    out.insert(3, "prompt", out.prompt_id.map(prompts))
    return out


def distribution_figure(gains: pd.DataFrame, metrics: list[str]):
    """Violin of per-generation RelGain per metric (one violin per generator), zero line drawn (Fig. 14)."""
    import seaborn as sns

    from iqabench.analysis.labels import figure_labels
    from iqabench.analysis.plotting import style_axes

    fig, axes = new_figure(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        data = gains[(gains.metric == metric) & np.isfinite(gains.relgain)]
        if data.empty:
            ax.set_title(f"{metric}: no usable gains")
            continue
        sns.violinplot(data=data, x="generator", y="relgain", ax=ax, inner="quartile", cut=0,
                       color="#9ecae1", density_norm="width")
        ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{metric}: per-generation RelGain")
        ax.set_xlabel("")
        ax.set_ylabel("RelGain, %")
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        labels = figure_labels(ticks, 28)
        ax.set_xticks(ax.get_xticks(), [labels[t] for t in ticks])
        ax.tick_params(axis="x", labelrotation=15)
        style_axes(ax)
    fig.tight_layout()
    fig.set_label("Distribution of the relative gain (%) of every single generation (prompt x seed) over the "
                  "baseline, one violin per generator (lines: quartiles), one panel per metric; positive = better; "
                  "the dashed line is no change.")
    return fig


@register_benchmark("seed-consistency",
                    description="Distribution of per-generation RelGain over prompts x seeds (paper Sec. 17, Fig. 14)")
class SeedConsistency(SweepBenchmark):
    options = {
        "n_seeds": "seeds 0..N-1 per prompt (instead of --seeds)",
        "near_zero": "|RelGain| percent counted as no change (default 1.0)",
    }

    def slots(self, spec: RunSpec, generators: GeneratorPool) -> list[Slot]:
        return sweep_slots(seeded_spec(spec), generators, self.name, [{}])

    def analyze(self, ctx: AnalysisContext) -> Result:
        metrics, frame = self.score_table(ctx)
        gains = per_generation_gains(frame, {m: metric_info(m).lower_better for m in metrics})
        # issue 25: a generator whose images are its baseline's pixels has no gain to measure: blank, not 0.00
        same = {g for g, check in ctx.identical_to_baseline().items() if check.all_identical}
        gains = blank_rows(gains, gains.generator.isin(same), ["relgain"])
        near_zero = float(ctx.spec.options.get("near_zero", NEAR_ZERO_PERCENT))
        summary = summarize_gains(gains, near_zero)
        if len(summary):
            summary = blank_rows(summary, summary.generator.isin(same), SUMMARY_EFFECTS)
        spec = seeded_spec(ctx.spec)
        n_prompts = frame.prompt_id.nunique()
        result = Result(self.name)
        result.notes.append(
            f"{n_prompts} prompts x {len(spec.seeds)} seeds; every generation is compared with the baseline image "
            "of the same prompt and seed. RelGain per generation = (f(x') - f(x)) / |f(x)| x 100, sign flipped for "
            "lower-is-better metrics (positive = better). The mean's brackets and test: see the seed_consistency "
            "table's footnote.")
        result.notes.append(
            f"near_zero_share = share of generations with |RelGain| < {near_zero:g}% (no visible change in score); "
            f"baseline scores within {RELGAIN_EPS:g} of zero make the relative gain undefined and are excluded.")
        for row in summary.itertuples():
            if row.n_near_zero_baseline_excluded:
                result.notes.append(f"{row.generator} / {row.metric}: {row.n_near_zero_baseline_excluded} "
                                    "generation(s) excluded (baseline score ~0).")
            if row.n_missing:
                result.notes.append(f"{row.generator} / {row.metric}: {row.n_missing} generation(s) lack a score "
                                    "(generation or scoring failed).")
        note = summary_footnote(summary)
        unit = "/".join(dict.fromkeys(summary["unit"])) if len(summary) else ""
        table = result.add_table("seed_consistency", effect_table(summary, {"mean": "p_value"}, footnote=note,
                                                                  unit=unit))
        result.headlines.append(long_headline(
            "seed_consistency", table.frame, row_key="generator", column_key="metric", value="mean",
            quantity="mean per-generation RelGain (%)", signed=True, higher_better=True, footnote=note,
            p_column="p_value", unit=unit, n_images=len(set(ctx.image_keys))))
        result.tables["per_prompt"] = per_prompt_summary(gains)
        result.tables["per_generation"] = gains.drop(columns="usable")
        result.figures["relgain_distribution"] = distribution_figure(gains, metrics)
        result.grids["baseline_vs_generator"] = grid_refs(ctx, frame, "source")
        result.summary = {
            "generators": list(dict.fromkeys(frame.generator)), "metrics": metrics, "n_prompts": int(n_prompts),
            "n_seeds": len(spec.seeds), "n_images": len(set(ctx.image_keys)),
            "mean_relgain": {f"{r.generator} | {r.metric}": r.mean for r in summary.itertuples()},
            "median_relgain": {f"{r.generator} | {r.metric}": r.median for r in summary.itertuples()},
            "improved_share": {f"{r.generator} | {r.metric}": r.improved_share for r in summary.itertuples()},
        }
        return result
