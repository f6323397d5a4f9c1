"""Every heatmap carries its uncertainty, every benchmark has a terminal headline, legends are not cut, and
fid-topk's best/worst grid never repeats an image: on small hand-made data, through the benchmarks' own functions."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from iqabench.analysis.plotting import hatched_cells
from iqabench.benchmarks.adversarial_gradcam import relgain_cell, transfer_figure, transfer_table, transfer_typed
from iqabench.benchmarks.condition_sweep import (
    correlation_headline,
    correlation_heatmap,
    correlation_table,
    curves_figure,
    distributions_figure,
    target_correlations,
)
from iqabench.benchmarks.fid_topk.benchmark import best_and_worst
from iqabench.benchmarks.fr_distances import extreme_pair_table, extremes_typed, matrix_figure, matrix_table
from iqabench.benchmarks.scale_sweep import gap_at_max_scale, gap_headline, gap_table, scale_gap
from iqabench.benchmarks.study.analyze import pairwise_figure, pairwise_footnote, pairwise_with_ci
from iqabench.benchmarks.sweeps import mean_with_ci
from iqabench.contracts.results import Result

PROMPTS = [f"p{i}" for i in range(6)]
SEEDS = (0, 1)
LONG_NAME = "iqa-adapter:/checkpoints/some/long/folder/adapter_topiq_nr_final.safetensors"


def _assert_ci_columns_bound(table: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        low, high = table[f"{column}_ci_low"], table[f"{column}_ci_high"]
        estimate = table[column]
        finite = low.notna() & high.notna()
        assert finite.any(), column
        assert ((low[finite] <= estimate[finite] + 1e-12) & (estimate[finite] <= high[finite] + 1e-12)).all(), column


def _hatch_patches(fig):
    return [p for p in fig.axes[0].patches if p.get_hatch()]


# --- 1. every heatmap carries its uncertainty ------------------------------------------------------------------

def test_transfer_matrix_has_relgain_cis_and_hatches_the_cell_whose_ci_includes_zero():
    rng = np.random.default_rng(0)
    prompts = np.repeat(PROMPTS, len(SEEDS))
    base = 10.0 + rng.normal(0, 0.1, prompts.size)
    cells = [relgain_cell("guidance on a", "a", base, base * 1.5 + rng.normal(0, 0.1, base.size), prompts, False),
             relgain_cell("guidance on a", "b", base, base + rng.normal(0, 1.0, base.size), prompts, False)]
    table = transfer_table(cells, ["guidance on a"], ["a", "b"])
    _assert_ci_columns_bound(table, ["a", "b"])
    row = table.iloc[0]
    assert row.a_ci_low > 0 and row.b_ci_low <= 0 <= row.b_ci_high
    typed, head = transfer_typed(table, pd.DataFrame(cells), ["a", "b"])
    assert "bootstrap over prompts" in typed.footnote
    assert head.significant.iloc[0].tolist() == [True, False]  # Holm over the two cells: "a" significant, "b" not
    fig = transfer_figure(table, ["a", "b"], head.significant)
    assert hatched_cells(fig) == [(0, 1)]  # row 0, column "b": n.s.; "a" is painted solidly
    assert all(p.get_alpha() == pytest.approx(0.55) for p in _hatch_patches(fig))
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    assert "<pattern" in svg.getvalue()  # the hatch survives into the saved SVG the report inlines


def test_pairwise_win_rates_have_participant_cis_and_hatch_no_preference():
    rows = []
    for p in range(8):  # A always beats B; A vs C is a coin flip; C beats B most of the time
        rows.append({"participant": f"u{p}", "pair_id": "x", "a": "A", "b": "B", "score_a": 1.0})
        rows.append({"participant": f"u{p}", "pair_id": "y", "a": "A", "b": "C", "score_a": float(p % 2)})
        rows.append({"participant": f"u{p}", "pair_id": "z", "a": "B", "b": "C", "score_a": 0.0 if p < 7 else 0.5})
    table = pairwise_with_ci(pd.DataFrame(rows))
    assert table.condition.tolist() == ["A", "B", "C"]
    _assert_ci_columns_bound(table, ["A", "B", "C"])
    indexed = table.set_index("condition")
    assert indexed.loc["A", "B"] == 1.0 and indexed.loc["A", "C"] == 0.5
    assert indexed.loc["A", "C_ci_low"] < 0.5 < indexed.loc["A", "C_ci_high"]
    assert "votes" in pairwise_footnote([m for t in table.ci_method for m in t.split("; ")])
    assert hatched_cells(pairwise_figure(table)) == [(0, 2), (2, 0)]  # A vs C both ways; A vs B is clear


def _sweep_frame(rng) -> pd.DataFrame:
    rows = []
    effect = rng.normal(0, 1, len(PROMPTS))
    for metric, fn in (("entropy", lambda t, p: t / 10 + effect[p] + rng.normal(0, 0.5)),  # condition works
                       ("piqe", lambda t, p: 30 + 5 * effect[p] + rng.normal(0, 3))):     # no relation
        for p, prompt in enumerate(PROMPTS):
            for target in (1.0, 50.0, 99.0):
                for seed in SEEDS:
                    rows.append({"generator": LONG_NAME, "role": "generator", "metric": metric, "target": target,
                                 "prompt_id": prompt, "seed": seed, "score": fn(target, p)})
    return pd.DataFrame(rows)


def test_condition_sweep_correlations_have_prompt_bootstrap_cis_and_hatch_the_unrelated_metric():
    table = target_correlations(_sweep_frame(np.random.default_rng(3)))
    _assert_ci_columns_bound(table, ["spearman", "aligned_spearman"])
    by_metric = table.set_index("metric")
    assert by_metric.loc["entropy", "aligned_spearman_ci_low"] > 0
    assert by_metric.loc["piqe", "aligned_spearman_ci_low"] <= 0 <= by_metric.loc["piqe", "aligned_spearman_ci_high"]
    # piqe is lower-is-better: the aligned interval is the raw one mirrored
    assert by_metric.loc["piqe", "aligned_spearman_ci_low"] == pytest.approx(-by_metric.loc["piqe",
                                                                                            "spearman_ci_high"])
    typed = correlation_table(table)
    assert set(table.ci_method) == {"cluster percentile"} and "spearman_ci" in typed.footnote
    head = correlation_headline(typed)
    assert head.significant.iloc[0].tolist() == [True, False]  # the permutation test agrees with the CIs here
    assert hatched_cells(correlation_heatmap(table, ["entropy", "piqe"], head.significant)) == [(0, 1)]


def test_fr_distance_matrix_has_cis_and_leaves_its_trivial_zero_diagonal_unhatched():
    rng = np.random.default_rng(1)
    conditions = ["baseline", "p1", "p99"]
    rows = [{"metric": "ssim", "generator": "G", "prompt_id": p, "seed": s, "condition_a": a, "condition_b": b,
             "distance": 0.0 if a == b else 0.1 * abs(i - j) + rng.uniform(0, 0.05)}
            for p in PROMPTS for s in SEEDS for i, a in enumerate(conditions) for j, b in enumerate(conditions)]
    table = matrix_table(pd.DataFrame(rows), {"ssim": conditions})
    _assert_ci_columns_bound(table, ["mean_distance"])
    assert (table.n == len(PROMPTS) * len(SEEDS)).all() and (table.n_units == len(PROMPTS)).all()
    assert set(table.quantity) == {"1-ssim"}  # the column holds 1 - SSIM and is named so
    fig = matrix_figure(table, "ssim", "G", "distance")
    # an image vs itself is exactly 0 with a zero-width CI: trivially so, not a failed test (issue 27); the rest moved
    assert hatched_cells(fig) == []
    assert "CI includes 0" in fig.get_label() and "diagonal" in fig.get_label()


def test_heatmap_hatches_a_ci_that_crosses_the_null_but_not_a_zero_width_one_at_it():
    from iqabench.analysis.plotting import heatmap_figure

    grid = pd.DataFrame([[0.0, 0.05], [0.3, 0.0]])
    low, high = pd.DataFrame([[0.0, -0.02], [0.2, 0.0]]), pd.DataFrame([[0.0, 0.1], [0.4, 0.0]])
    fig = heatmap_figure(grid, "d", scale="sequential", low=low, high=high, null=0.0)
    assert hatched_cells(fig) == [(0, 1)]


def test_scale_sweep_gap_has_a_paired_ci_aligned_for_lower_is_better_metrics():
    rng = np.random.default_rng(2)
    rows = [{"generator": "G", "role": "generator", "metric": metric, "target": target, "scale": scale,
             "prompt_id": p, "seed": s, "score": sign * scale * target / 10 + rng.normal(0, 0.2) + i}
            for metric, sign in (("entropy", 1.0), ("piqe", 1.0)) for target in (5.0, 99.0) for scale in (0.1, 1.0)
            for i, p in enumerate(PROMPTS) for s in SEEDS]
    frame = pd.DataFrame(rows)
    gaps = scale_gap(mean_with_ci(frame, ["generator", "metric", "target", "scale"]), frame)
    _assert_ci_columns_bound(gaps, ["gap", "aligned_gap"])
    top = gap_at_max_scale(gaps).set_index("metric")
    assert list(top.index) == ["entropy", "piqe"] and (top.scale == 1.0).all()
    assert top.loc["entropy", "aligned_gap"] == pytest.approx(top.loc["entropy", "gap"])
    assert top.loc["entropy", "gap"] > 0
    assert top.loc["piqe", "aligned_gap"] == pytest.approx(-top.loc["piqe", "gap"])  # higher piqe = worse
    assert top.loc["piqe", "aligned_gap"] < 0 and top.loc["piqe", "aligned_gap_ci_high"] < 0
    assert gap_table(gap_at_max_scale(gaps)).effects == {"aligned_gap": "aligned_gap_p_holm"}


# --- 5. terminal headlines at 80 columns -----------------------------------------------------------------------

def _terminal(result: Result, width: int = 80) -> str:
    from iqabench.cli import summary

    console = Console(width=width, force_terminal=False, record=True)
    original, summary.out_console = summary.out_console, console
    try:
        summary.print_summary(result)
    finally:
        summary.out_console = original
    return console.export_text()


def _sweep_results() -> dict[str, tuple[Result, list[str]]]:
    rng = np.random.default_rng(4)
    correlations = target_correlations(_sweep_frame(rng))
    frame = pd.DataFrame([{"generator": LONG_NAME, "role": "generator", "metric": m, "target": t, "scale": sc,
                           "prompt_id": p, "seed": s, "score": sc * t + rng.normal()}
                          for m in ("entropy", "piqe") for t in (5.0, 99.0) for sc in (0.5, 1.0)
                          for p in PROMPTS for s in SEEDS])
    gaps = scale_gap(mean_with_ci(frame, ["generator", "metric", "target", "scale"]), frame)
    conditions = ["baseline", "p1", "p99"]
    pairs = pd.DataFrame([{"metric": m, "generator": LONG_NAME, "prompt_id": p, "seed": s, "condition_a": a,
                           "condition_b": b, "distance": 0.0 if a == b else rng.uniform(0.1, 0.3)}
                          for m in ("ssim", "gmsd") for p in PROMPTS for s in SEEDS for a in conditions
                          for b in conditions])
    distances = matrix_table(pairs, {"ssim": conditions, "gmsd": conditions})
    prompts = np.repeat(PROMPTS, len(SEEDS))
    base = 10 + rng.normal(0, 1, prompts.size)
    cells = [relgain_cell(method, m, base, base * factor + rng.normal(0, 0.1, base.size), prompts, False)
             for method, factor in (("guidance on topiq_nr", 1.3), (LONG_NAME, 1.05)) for m in ("topiq_nr", "piqe")]
    transfer = transfer_table(cells, ["guidance on topiq_nr", LONG_NAME], ["topiq_nr", "piqe"])
    typed_corr = correlation_table(correlations)
    typed_top = gap_table(gap_at_max_scale(gaps))
    extremes, extremes_head = extremes_typed(extreme_pair_table(distances, "p1", "p99"), "p1", "p99")
    typed_transfer, transfer_head = transfer_typed(transfer, pd.DataFrame(cells), ["topiq_nr", "piqe"])
    return {
        "condition-sweep": (Result("condition-sweep", tables={"correlation": typed_corr.frame},
                                   table_info={"correlation": typed_corr},
                                   headlines=[correlation_headline(typed_corr)]),
                            [LONG_NAME[-20:], "Spearman correlation, target vs score", "entropy", "piqe"]),
        "scale-sweep": (Result("scale-sweep", tables={"target_gap": gaps, "gap_at_max_lambda": typed_top.frame},
                               headlines=[gap_headline(typed_top)]),
                        [LONG_NAME[-20:], "Score gap", "entropy", "piqe"]),
        "fr-distances": (Result("fr-distances", tables={"fr_extremes": extremes.frame, "fr_matrix": distances},
                                headlines=[extremes_head]),
                         [LONG_NAME[-20:], "Mean distance, p1 vs p99", "1-ssim", "gmsd"]),
        "adversarial-gradcam": (Result("adversarial-gradcam", tables={"transfer_matrix": typed_transfer.frame},
                                       headlines=[transfer_head]),
                                ["RelGain", "guidance on topiq_nr", LONG_NAME[-20:], "topiq_nr", "piqe"]),
    }


@pytest.mark.parametrize("bench", ["condition-sweep", "scale-sweep", "fr-distances", "adversarial-gradcam"])
def test_sweep_and_gradcam_benchmarks_print_a_headline_with_cis_at_80_columns(bench):
    result, expected = _sweep_results()[bench]
    text = _terminal(result)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    flat = "".join(text.split())
    for word in expected:  # generator (folded at 80 columns: compare without line breaks), quantity, metrics
        assert "".join(word.split()) in flat, (word, text)
    # 6 prompts: below MIN_UNITS the CI is not shown, and the legend says so and how many prompts each rests on
    assert "toofewpromptsfora95%CI" in flat and "eachestimaterestson6prompts" in flat
    assert "Brackets:95%CI" in flat and "bootstrap" in flat  # the method is named under the table


# --- 2. legends are not cut ------------------------------------------------------------------------------------

def _legend_figures():
    rows = []
    for generator in (LONG_NAME, "iqa-adapter:/b.safetensors"):
        for target in (1.0, 50.0, 99.0):
            rows.append({"generator": generator, "metric": "piqe", "target": target, "mean": 30 - target / 10,
                         "mean_ci_low": 28 - target / 10, "mean_ci_high": 32 - target / 10})
    means = pd.DataFrame(rows)
    baselines = pd.DataFrame([{"generator": g, "metric": "piqe", "mean": 31.0} for g in means.generator.unique()])
    frame = pd.DataFrame([{"generator": g, "role": "generator", "metric": "piqe", "target": t, "score": 30 - t / 10 + k}
                          for g in means.generator.unique() for t in (1.0, 50.0, 99.0) for k in range(4)])
    return {"curves": curves_figure(means, baselines, ["piqe"], "target", "target percentile"),
            "curves_one_baseline": curves_figure(means[means.generator == LONG_NAME],
                                                 baselines[baselines.generator == LONG_NAME], ["piqe"], "target",
                                                 "target percentile"),
            "distributions": distributions_figure(frame, ["piqe"])}


@pytest.mark.parametrize("name", ["curves", "curves_one_baseline", "distributions"])
def test_every_legend_lies_inside_its_saved_figure(name):
    fig = _legend_figures()[name]
    fig.savefig(io.BytesIO(), format="png", dpi=100, bbox_inches="tight")  # as the report's exports save it
    renderer = fig.canvas.get_renderer()
    # the exports save with bbox_inches="tight": the saved area is the tight box of every artist
    box = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    legends = [legend for ax in fig.axes if (legend := ax.get_legend()) is not None] + list(fig.legends)
    assert legends, "figure has no legend"
    for legend in legends:
        extent = legend.get_window_extent(renderer)
        for ax in fig.axes:  # issue 27: outside the data, never on the curves
            assert not extent.overlaps(ax.get_window_extent(renderer)), (extent, ax.get_window_extent(renderer))
        assert extent.x0 >= box.x0 - 0.5 and extent.y0 >= box.y0 - 0.5, (extent, box)
        assert extent.x1 <= box.x1 + 0.5 and extent.y1 <= box.y1 + 0.5, (extent, box)
        texts = [t.get_text() for t in legend.get_texts()]
        assert any("baseline" in t for t in texts) or name == "distributions"


# --- 3. fid-topk: best and worst columns --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 5, 8])
def test_fid_topk_best_and_worst_grid_never_shows_one_image_twice(n):
    from iqabench.reports.render import _grid_view

    rng = np.random.default_rng(n)
    keys = [f"img{i}" for i in range(n)]
    ranking = dict(zip(keys, rng.normal(size=n), strict=True))
    rank = sorted(ranking, key=lambda k: -ranking[k])
    refs = best_and_worst(rank, ranking, {})
    best = [r.image_key for r in refs if r.group == "best"]
    worst = [r.image_key for r in refs if r.group == "worst"]
    assert best == rank[: n // 2]  # the top of the ranking, best first
    assert worst == rank[::-1][: n // 2]  # the bottom, worst first
    assert not set(best) & set(worst)
    # the report lines the two columns up by row: no row shows the same image in both columns
    view = _grid_view("reference_best_and_worst", refs, lambda key: (None, "not cached"))
    assert view.groups == ["best", "worst"] and view.total_rows == n // 2
    for (label, (left, right)), b, w in zip(view.rows + view.more_rows, best, worst, strict=True):
        assert left.caption == right.caption == label
        assert ranking[b] >= ranking[w]
    paired = [k for pair in zip(best, worst, strict=True) for k in pair]
    assert [s for r in refs for s in r.scores.values()] == [ranking[k] for k in paired]
