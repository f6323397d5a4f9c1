"""condition-sweep: target parsing, target-vs-score correlations, an offline sweep, and image reuse by the
fr-distances and scale-sweep benchmarks that follow it on the same adapter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_iqa_adapter_generator import tiny_checkpoint

from iqabench.api import run
from iqabench.benchmarks.condition_sweep import target_correlations
from iqabench.benchmarks.sweeps import missing_scores_note, parse_targets, target_label
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    return f"iqa-adapter:{path}[steps=2]"


def _sweep_frame(metric: str, fn) -> pd.DataFrame:
    rows = []
    for target in (1, 5, 50, 99):
        for seed in range(3):
            rows.append({"generator": "G", "role": "generator", "metric": metric, "target": float(target),
                         "prompt_id": "p", "seed": seed, "score": fn(target, seed)})
    rows.append({"generator": "G", "role": "baseline", "metric": metric, "target": np.nan, "prompt_id": "p",
                 "seed": 0, "score": 1e6})  # baselines must not enter the correlation
    return pd.DataFrame(rows)


def test_monotone_sweep_has_spearman_one():
    table = target_correlations(_sweep_frame("entropy", lambda t, s: t**2 + 1e-3 * s))
    row = table.iloc[0]
    assert row.n == 12
    assert row.spearman_of_means == pytest.approx(1.0)
    assert row.aligned_spearman_of_means == pytest.approx(1.0)
    # over images the target is tied across seeds, so rho < 1 even for a monotone sweep; pearson < 1: not linear
    assert 0.95 < row.spearman < 1.0 and 0.9 < row.pearson < 1.0


def test_lower_is_better_metric_is_aligned_and_flat_scores_give_nan():
    falling = target_correlations(_sweep_frame("piqe", lambda t, s: 100 - t - 0.01 * s)).iloc[0]
    assert falling.spearman_of_means == pytest.approx(-1.0)
    assert falling.aligned_spearman_of_means == pytest.approx(1.0)
    assert falling.aligned_spearman == pytest.approx(-falling.spearman) and falling.spearman < -0.95
    assert falling.pearson == pytest.approx(-1.0, abs=1e-4)
    flat = target_correlations(_sweep_frame("entropy", lambda t, s: 3.0)).iloc[0]
    assert np.isnan(flat.spearman) and np.isnan(flat.pearson)


def test_target_parsing():
    assert parse_targets("p1, 5,p99") == [1.0, 5.0, 99.0]
    assert parse_targets([25, 75]) == [25.0, 75.0]
    assert target_label(99.0) == "p99" and target_label(2.5) == "p2.5"
    with pytest.raises(ValueError, match="outside"):
        parse_targets("101")
    with pytest.raises(ValueError, match="not a number"):
        parse_targets("p1,high")


def test_generator_without_a_target_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not take"):
        Runner(RunSpec("condition-sweep", ["tiny-sd"]), tmp_path)


def test_a_sweep_whose_targets_make_the_same_pixels_is_blank_and_noted_not_a_measured_zero(adapter, tmp_path):
    """Issue 25: at scale 0 every target is the base model's image, so no correlation is measured."""
    flat = adapter.replace("[steps=2]", "[scale=0,steps=2]")
    result = run(RunSpec("condition-sweep", [flat], metrics=["entropy"], limit=1, seeds=[0, 1], batch_size=2,
                         options={"targets": "1,50,99"}), out=tmp_path).result
    row = result.tables["correlation"].iloc[0]
    assert bool(row["identical_to_baseline"]) and row[["aligned_spearman", "spearman_p", "pearson"]].isna().all()
    sweep = [n for n in result.notes if n.startswith(f"generator {flat}, at target 1, 50, 99 made pixel-identical")]
    assert len(sweep) == 1 and "4 paired item(s): the target has no effect" in sweep[0]
    assert any(n.startswith(f"{flat} and its baseline ") and "6 paired item(s)" in n for n in result.notes)


def test_sweep_then_fr_distances_and_scale_sweep_reuse_every_cached_image(adapter, tmp_path):
    common = dict(generators=[adapter], metrics=["piqe", "entropy"], limit=2, seeds=[0], batch_size=4)
    sweep = run(RunSpec("condition-sweep", options={"targets": "1,50,99"}, **common), out=tmp_path)
    assert sweep.plan.n_unique_images == 2 * 4  # prompts x (baseline + 3 targets)
    result = sweep.result
    means = result.tables["scores_by_target"]
    assert sorted(means.target.unique()) == [1.0, 50.0, 99.0] and (means.n == 2).all()
    per_image = result.tables["per_image"]
    p99 = per_image[per_image.condition == "p99"].piqe
    assert means[(means.metric == "piqe") & (means.target == 99.0)]["mean"].iloc[0] == pytest.approx(p99.mean())
    baseline = result.tables["baseline"].set_index("metric")
    assert baseline.loc["piqe", "mean"] == pytest.approx(per_image[per_image.condition == "baseline"].piqe.mean())
    assert set(result.tables["correlation"].metric) == {"piqe", "entropy"}
    assert {"mean_score_vs_target", "score_distributions", "correlation_heatmap"} <= set(result.figures)
    assert {ref.group for ref in result.grids["targets"]} == {"baseline", "p1", "p50", "p99"}

    fr = Runner(RunSpec("fr-distances", options={"targets": "1,50,99"}, **{**common, "metrics": ["ssim"]}),
                tmp_path).summarize_plan()
    assert fr.n_unique_images == 8 and fr.n_cached_images == 8 and fr.n_to_generate == 0

    scale_spec = RunSpec("scale-sweep", options={"scales": "0.5,1.0", "scale_targets": "1,99"}, **common)
    scale = Runner(scale_spec, tmp_path).summarize_plan()
    # baseline + (p1, p99) at lambda 1.0 are the condition sweep's images; only lambda 0.5 is new.
    assert scale.n_unique_images == 2 * 5 and scale.n_cached_images == 2 * 3 and scale.n_to_generate == 2 * 2
    assert scale.n_scores_cached == 2 * 3 * 2


def test_grid_lists_every_prompt_seed_pair_and_the_report_counts_them():
    """3 prompts x 2 seeds = 6 grid rows: grid_refs must not cut rows, so the report's "k of n" is true."""
    from types import SimpleNamespace

    from iqabench.benchmarks.sweeps import grid_refs
    from iqabench.reports.render import _grid_view

    rows = [{"generator": "G", "role": "generator", "prompt_id": f"p{p}", "prompt": f"prompt {p}", "seed": seed,
             "condition": condition, "image_key": f"k{p}{seed}{condition}", "metric": "piqe", "score": 1.0}
            for p in range(3) for seed in range(2) for condition in ("baseline", "p99")]
    ctx = SimpleNamespace(store=SimpleNamespace(has_image=lambda key: True))
    refs = grid_refs(ctx, pd.DataFrame(rows), "condition")
    assert len(refs) == 12
    view = _grid_view("targets", refs, lambda key: ("data:,", None))
    assert view.total_rows == 6 and view.groups == ["baseline", "p99"]


def test_summary_correlation_is_aligned_for_a_lower_is_better_metric():
    from iqabench.benchmarks.condition_sweep import aligned_spearman_summary

    rising_piqe = target_correlations(_sweep_frame("piqe", lambda t, s: t + 0.01 * s))  # worse with the target
    summary = aligned_spearman_summary(rising_piqe)
    assert rising_piqe.spearman.iloc[0] > 0.9
    assert summary["G | piqe"] == pytest.approx(-rising_piqe.spearman.iloc[0]) and summary["G | piqe"] < 0


def test_missing_scores_note_counts_the_nan_scores_and_says_nothing_when_none_is_missing():
    frame = pd.DataFrame({"score": [1.0, np.nan, np.nan, 0.5]})
    assert missing_scores_note(frame) == "2 (image, metric) score(s) are missing and were left out."
    assert missing_scores_note(frame, "generation or scoring failed") == (
        "2 (image, metric) score(s) are missing (generation or scoring failed) and were left out.")
    assert missing_scores_note(frame.dropna()) is None
