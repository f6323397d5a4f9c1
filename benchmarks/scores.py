"""Scores: mean IQA score of each generator with a bootstrap CI; no baseline needed.

The plain leaderboard a researcher looks at before asking for relative gains;
it shares the image cache with RelGain, so running both generates nothing twice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iqabench.analysis.decisions import level_table, unit_sentence
from iqabench.analysis.stats import describe_method, inference_unit, mean_ci
from iqabench.benchmark import AnalysisContext, BaseBenchmark, ImageRef, PlannedItem, Result, register_benchmark
from iqabench.contracts.generators import GeneratorPool
from iqabench.contracts.results import PerItemScores
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import metric_info


@register_benchmark("scores", description="Mean IQA score per generator and metric, with 95% bootstrap CIs")
class Scores(BaseBenchmark):
    options = {}

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        items = self.work_items(spec)
        return [PlannedItem(g, item) for g in generators.canonical_list(spec.generators) for item in items]

    def analyze(self, ctx: AnalysisContext) -> Result:
        metrics = list(ctx.metric_fingerprints)
        scores = {m: ctx.scores(m) for m in metrics}
        rows, per_item = [], []
        generators = list(dict.fromkeys(p.generator for p in ctx.plan))
        for g in generators:
            pairs = [(p, k) for p, k in zip(ctx.plan, ctx.image_keys, strict=True) if p.generator == g]
            prompts = [p.item.prompt_id for p, _ in pairs]
            for m in metrics:
                values = np.array([np.nan if scores[m].get(k) is None else scores[m][k] for _, k in pairs], dtype=float)
                est = mean_ci(values, prompts)  # clustered by prompt when there are several seeds
                rows.append({"generator": g, "metric": m,
                             "direction": "lower is better" if metric_info(m).lower_better else "higher is better",
                             "score": est.value, "score_ci_low": est.ci_low, "score_ci_high": est.ci_high,
                             "n": est.n, "n_prompts": est.n_clusters, "n_units": est.n_clusters,
                             "unit": inference_unit(prompts), "n_missing": int(values.size - est.n),
                             "ci_method": est.method})
        for p, k in zip(ctx.plan, ctx.image_keys, strict=True):
            per_item.append({"generator": p.generator, "prompt_id": p.item.prompt_id, "prompt": p.item.prompt,
                             "seed": p.item.seed, **{m: scores[m].get(k) for m in metrics}})
        table = pd.DataFrame(rows)
        unit = "/".join(dict.fromkeys(table["unit"])) if rows else ""
        note = (describe_method(table["ci_method"].tolist() if rows else []) + " "
                + unit_sentence(unit, table["n_units"].to_numpy(float) if rows else None, int(table["n"].max())
                                if rows else None)
                + " Mean scores are levels, not effects: no test, no bold (compare runs with `iqabench report A B`).")
        result = Result(self.name)
        result.add_table("scores", level_table(table, footnote=note, unit=unit))
        result.tables["scores_per_item"] = pd.DataFrame(per_item)
        if rows:
            from iqabench.analysis.decisions import long_headline

            result.headlines.append(long_headline(
                "scores", table, row_key="generator", column_key="metric", value="score", quantity="score",
                signed=False, higher_better={m: not metric_info(m).lower_better for m in metrics}, footnote=note,
                unit=unit, n_images=len(set(ctx.image_keys))))
            long = pd.DataFrame(per_item).melt(id_vars=["generator", "prompt_id", "prompt", "seed"],
                                               value_vars=metrics, var_name="metric", value_name="score")
            result.per_item = PerItemScores(long.assign(
                condition="", score=long.score.astype(float),
                lower_better=long.metric.map({m: metric_info(m).lower_better for m in metrics})))
        result.grids["samples"] = [
            ImageRef(k, f"{p.item.prompt} (seed {p.item.seed})",
                     {m: v for m in metrics if (v := scores[m].get(k)) is not None}, group=p.generator)
            for p, k in zip(ctx.plan, ctx.image_keys, strict=True) if ctx.store.has_image(k)
        ]  # every image: the report shows the first rows complete in every column and the rest behind "show all"
        result.summary = {"generators": generators, "metrics": metrics, "n_images": len(set(ctx.image_keys)),
                          "mean_score": {f"{r['generator']} | {r['metric']}": r["score"] for r in rows}}
        return result
