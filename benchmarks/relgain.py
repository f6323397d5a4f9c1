"""RelGain: how much a generator improves IQA scores over its baseline on the same prompts and seeds.

RelGain_m = mean over items of (f_m(x') - f_m(x)) / f_m(x) * 100, the sign
flipped for lower-is-better metrics so positive always means better
(IQA-Adapter paper, Sec. 4.2 and Fig. 3a). Several generators give the
generators x metrics matrix of Fig. 3(a).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iqabench.analysis.decisions import decision_sentence, effect_table, long_headline, unit_sentence
from iqabench.analysis.stats import RELGAIN_EPS, describe_method, mean_ci, paired_statistics, relative_gains, unit_test
from iqabench.benchmark import AnalysisContext, BaseBenchmark, ImageRef, PlannedItem, Result, register_benchmark
from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import GeneratorPool
from iqabench.contracts.results import PerItemScores
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import metric_info

#: the paired comparison's numbers that measure the effect (blank where both sides made the same pixels)
PAIRED_EFFECTS = ("improvement", "improvement_ci_low", "improvement_ci_high", "improvement_std", "t_statistic",
                  "p_value", "wilcoxon_statistic", "wilcoxon_p_value", "win_rate")


@register_benchmark("relgain", description="Relative IQA gain of each generator over its baseline (paper Fig. 3a)")
class RelGain(BaseBenchmark):
    options = {}

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        items = self.work_items(spec)
        plan: list[PlannedItem] = []
        for generator in generators.canonical_list(spec.generators):
            # --baseline wins; otherwise the generator names its own (e.g. IQA-Adapter -> its base model)
            baseline = generators.baseline(generator, spec.baseline)
            if baseline == generator:
                raise UserInputError(f"generator {generator!r} is its own baseline; pass a different --baseline")
            plan += [PlannedItem(baseline, item) for item in items]
            plan += [PlannedItem(generator, item) for item in items]
        return plan

    def analyze(self, ctx: AnalysisContext) -> Result:
        spec = ctx.spec
        key_of = {(p.generator, p.item.prompt_id, p.item.seed): k
                  for p, k in zip(ctx.plan, ctx.image_keys, strict=True)}
        items = [p.item for p in ctx.plan]
        items = list({(i.prompt_id, i.seed): i for i in items}.values())
        generators = ctx.generators.canonical_list(spec.generators)
        baselines = {g: ctx.baselines[g] for g in generators}
        metrics = list(ctx.metric_fingerprints)
        scores = {m: ctx.scores(m) for m in metrics}

        per_item_rows, summary_rows, paired_rows, notes = [], [], [], []
        identical = ctx.identical_to_baseline()  # issue 25: same pixels on both sides is no measured 0
        for g in generators:
            b = baselines[g]
            same = g in identical and identical[g].all_identical
            for m in metrics:
                info = metric_info(m)
                base_keys = [key_of[(b, i.prompt_id, i.seed)] for i in items]
                gen_keys = [key_of[(g, i.prompt_id, i.seed)] for i in items]
                base = np.array([_value(scores[m].get(k)) for k in base_keys])
                method = np.array([_value(scores[m].get(k)) for k in gen_keys])
                # identical sides: nothing was compared, so the effects are blank, not 0.00 [0.00, 0.00] (the run
                # notes say why); the scores are measured levels and stay (docs/robustness.md, `report A B`)
                gains = relative_gains(base, np.full_like(method, np.nan) if same else method, info.lower_better)
                prompts = [i.prompt_id for i in items]
                pair_stats = paired_statistics(base, method, info.lower_better, prompts)
                if same:
                    pair_stats.update(dict.fromkeys(PAIRED_EFFECTS, float("nan")))
                paired_rows.append({"generator": g, "baseline": b, "metric": m, **pair_stats})
                for i, item in enumerate(items):
                    per_item_rows.append({
                        "generator": g, "baseline": b, "metric": m, "prompt_id": item.prompt_id,
                        "prompt": item.prompt, "seed": item.seed, "baseline_score": base[i],
                        "generator_score": method[i], "relgain": gains.gains[i],
                        "status": "identical to baseline" if same else _status(base[i], method[i], gains.usable[i]),
                    })
                usable = gains.gains[gains.usable]
                est = mean_ci(gains.gains, prompts)  # NaN (unusable) items dropped; clustered by prompt
                test = unit_test(gains.gains, prompts)  # one-sample t on per-prompt mean gains (n = prompts)
                n_missing = int((~np.isfinite(base) | ~np.isfinite(method)).sum())
                summary_rows.append({
                    "generator": g, "baseline": b, "metric": m,
                    "direction": "lower is better" if info.lower_better else "higher is better",
                    "relgain": float(np.mean(usable)) if usable.size else float("nan"),
                    "relgain_ci_low": est.ci_low, "relgain_ci_high": est.ci_high, "p_value": test.p_value,
                    "n_units": test.n_units, "unit": test.unit, "n_images": test.n_images, "ci_method": est.method,
                    "n": int(usable.size), "n_near_zero_excluded": gains.n_near_zero,
                    "n_negative_baseline": gains.n_negative_base, "n_missing": n_missing,
                    "baseline_mean": float(np.nanmean(base)) if np.isfinite(base).any() else float("nan"),
                    "generator_mean": float(np.nanmean(method)) if np.isfinite(method).any() else float("nan"),
                    "improved_share": float(np.mean(usable > 0)) if usable.size else float("nan"),
                    "identical_to_baseline": same,
                })
                if gains.n_near_zero:
                    notes.append(f"{g} / {m}: {gains.n_near_zero} item(s) had a baseline score within "
                                 f"{RELGAIN_EPS:g} of zero; their relative gain is undefined and they were excluded.")
                if gains.n_negative_base:
                    notes.append(f"{g} / {m}: {gains.n_negative_base} item(s) had a negative baseline score; "
                                 "the gain was divided by |f(x)| so that an improvement stays positive.")
                if n_missing:
                    notes.append(f"{g} / {m}: {n_missing} item(s) lack a score (generation or scoring failed) "
                                 "and were left out; see the failures table.")
        notes.insert(0, "RelGain = mean over items of (f(x') - f(x)) / |f(x)| x 100, sign flipped for "
                        "lower-is-better metrics, so positive means better. Items whose baseline score is within "
                        f"{RELGAIN_EPS:g} of zero are excluded (division by ~0); negative baseline scores are divided "
                        "by their absolute value. Paired statistics (ACPO, Table 2): improvement = mean signed "
                        "difference (positive = better), two-sided paired t-test and Wilcoxon signed-rank test on "
                        "per-prompt mean differences when seeds repeat within prompts (else on images), "
                        "win rate = share of items improved (ties count half).")

        summary = pd.DataFrame(summary_rows)
        unit = "/".join(dict.fromkeys(summary["unit"])) if len(summary) else ""
        n_images = len(items)
        common = unit_sentence(unit, summary["n_units"].to_numpy(float) if len(summary) else None, n_images)
        note = (describe_method(summary["ci_method"].tolist() if len(summary) else []) + " " + common
                + " p_value: one-sample t-test of mean gain 0 on the per-unit mean gains. " + decision_sentence())
        relgain = effect_table(summary, {"relgain": "p_value"}, footnote=note, unit=unit)
        paired = pd.DataFrame(paired_rows)
        paired_note = (describe_method(paired["ci_method"].tolist() if len(paired) else []) + " " + common
                       + " Tests: two-sided paired t (p_value, the decision) and Wilcoxon signed-rank (a check, "
                       "unadjusted) on per-unit mean differences. " + decision_sentence())
        matrix = summary.pivot(index="generator", columns="metric", values="relgain").reindex(
            index=generators, columns=metrics)
        result = Result(self.name, notes=notes)
        result.add_table("relgain", relgain)
        paired_table = effect_table(paired, {"improvement": "p_value"}, footnote=paired_note, unit=unit)
        # the .tex keeps what fits a page (the CSV has every column); reports.tables.LATEX_COLUMNS_ATTR
        paired_table.frame.attrs["latex_columns"] = [
            c for c in ("generator", "baseline", "metric", "n_units", "improvement", "p_value", "improvement_p_holm",
                        "wilcoxon_p_value", "win_rate") if c in paired_table.frame]
        result.add_table("paired_statistics", paired_table)
        result.add_table("relgain_per_item", pd.DataFrame(per_item_rows))
        result.headlines.append(long_headline(
            "relgain", relgain.frame, row_key="generator", column_key="metric", value="relgain",
            quantity="relgain", signed=True, higher_better=True, footnote=note, p_column="p_value", unit=unit,
            n_images=n_images))
        per_item = pd.DataFrame(per_item_rows)
        if len(per_item):
            # the generators' scores only: the baselines are the same base model with the same seeds in every
            # run, so pairing them across runs would compare identical images
            lower = {m: metric_info(m).lower_better for m in metrics}
            result.per_item = PerItemScores(per_item.assign(
                condition="", score=per_item.generator_score, lower_better=per_item.metric.map(lower)))
        failures = ctx.failures()
        errors = [{"image_key": k, "metric": m, "error": e} for m in metrics for k, e in ctx.score_errors(m).items()]
        if failures or errors:
            rows = [{"image_key": k, "metric": "", "error": v} for k, v in failures.items()] + errors
            result.tables["failures"] = pd.DataFrame(rows)
        from iqabench.analysis.plotting import heatmap_figure

        def grid(column: str) -> pd.DataFrame:
            return summary.pivot(index="generator", columns="metric", values=column).reindex(
                index=generators, columns=metrics)

        result.figures["relgain_matrix"] = heatmap_figure(
            matrix, "RelGain, % (generators x metrics)", fmt=".2g", low=grid("relgain_ci_low"),
            high=grid("relgain_ci_high"), significant=result.headline.significant,
            too_few=result.headline.too_few_units(),
            caption="Mean relative IQA gain (%) of each generator over its baseline on the same prompts and seeds, "
                    "per metric, signs flipped for lower-is-better metrics so that positive (blue) is better; "
                    "brackets: 95% CI clustered by prompt (not shown below 10 prompts, as in the tables); hatched, "
                    "faded cells: not significant "
                    "(Holm-adjusted p >= 0.05 over the table's cells).")
        result.grids["baseline_vs_generator"] = self._grid(ctx, generators, baselines, items, key_of, scores)
        result.summary = {
            "generators": generators, "baselines": baselines, "metrics": metrics,
            "n_items": len(items), "n_images": len(set(ctx.image_keys)), "n_failures": len(failures),
            "n_score_errors": len(errors),
            "relgain": {f"{r['generator']} | {r['metric']}": r["relgain"] for r in summary_rows},
        }
        return result

    def _grid(self, ctx, generators, baselines, items, key_of, scores) -> list[ImageRef]:
        refs = []
        for item in items:  # no cap: the report says "showing k of n" and keeps the rest behind "show all"
            caption = f"{item.prompt} (seed {item.seed})"
            columns = list(dict.fromkeys([baselines[g] for g in generators] + generators))
            for column in columns:
                key = key_of[(column, item.prompt_id, item.seed)]
                if not ctx.store.has_image(key):
                    continue
                shown = {m: v for m in scores if (v := scores[m].get(key)) is not None}
                refs.append(ImageRef(key, caption, shown, group=column))
        return refs


def _value(score: float | None) -> float:
    return float("nan") if score is None else float(score)


def _status(base: float, method: float, usable: bool) -> str:
    if not (np.isfinite(base) and np.isfinite(method)):
        return "missing score"
    return "ok" if usable else "baseline near zero: excluded"
