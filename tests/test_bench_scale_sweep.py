"""scale-sweep: defaults, the target gap on constructed means, and an offline run where lambda = 0 is the base."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_iqa_adapter_generator import tiny_checkpoint

from iqabench.api import run
from iqabench.benchmarks.scale_sweep import DEFAULT_SCALES, scale_gap, sweep_scales
from iqabench.contracts.specs import RunSpec


def test_default_scales_are_nine_from_005_to_1():
    scales = sweep_scales(RunSpec("scale-sweep", ["x"]))
    assert scales == list(DEFAULT_SCALES) and len(scales) == 9 and scales[0] == 0.05 and scales[-1] == 1.0
    assert sweep_scales(RunSpec("scale-sweep", ["x"], options={"scales": "0,0.5"})) == [0.0, 0.5]
    with pytest.raises(ValueError, match="scales"):
        sweep_scales(RunSpec("scale-sweep", ["x"], options={"scales": "-1"}))


def test_gap_between_high_and_low_target_per_scale():
    means = pd.DataFrame([
        {"generator": "G", "metric": "m", "scale": s, "target": t, "mean": base + s * (t / 10)}
        for s in (0.1, 0.5, 1.0) for t, base in ((5, 1.0), (99, 1.0))
    ])
    gap = scale_gap(means).set_index("scale")
    assert gap.gap.tolist() == pytest.approx([0.1 * 9.4, 0.5 * 9.4, 1.0 * 9.4])
    assert set(gap.low_target) == {"p5"} and set(gap.high_target) == {"p99"}


def test_offline_sweep_lambda_zero_scores_equal_the_baseline(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    spec = RunSpec("scale-sweep", [f"iqa-adapter:{checkpoint}[steps=2]"], metrics=["piqe", "entropy"], limit=2,
                   seeds=[0], batch_size=4, options={"scales": "0,1", "scale_targets": "1,99"})
    outcome = run(spec, out=tmp_path / "out")
    result = outcome.result
    # lambda = 0 is the base model bit for bit, so its images (and scores) are the baseline's
    assert outcome.plan.n_unique_images == 2 * 5
    per_image = result.tables["per_image"].set_index(["condition", "prompt_id"])
    for condition in ("p1, lambda=0", "p99, lambda=0"):
        assert per_image.loc[condition].piqe.tolist() == pytest.approx(per_image.loc["baseline"].piqe.tolist())
    means = result.tables["scores_by_scale"]
    assert len(means) == 2 * 2 * 2 and (means.n == 2).all()
    gap = result.tables["target_gap"].set_index(["metric", "scale"])
    # issue 25: at lambda = 0 both targets made the same pixels: the gap is blank and flagged, not a measured 0.00
    assert np.isnan(gap.loc[("piqe", 0.0), "gap"]) and np.isnan(gap.loc[("piqe", 0.0), "aligned_gap_ci_low"])
    assert gap.loc[("piqe", 0.0), "identical_to_baseline"] and not gap.loc[("piqe", 1.0), "identical_to_baseline"]
    assert gap.loc[("piqe", 1.0), "gap"] != pytest.approx(0.0)
    assert any(n.startswith(f"generator iqa-adapter:{checkpoint}[steps=2], scale 0, at target 1, 99 made "
                            "pixel-identical images for all 2 paired item(s)") and "not a measured 0" in n
               for n in result.notes), result.notes
    assert "mean_score_vs_scale" in result.figures
    assert "lambda" in outcome.report.read_text("utf-8")


def test_summary_gap_is_aligned_for_a_lower_is_better_metric():
    from iqabench.benchmarks.scale_sweep import aligned_gap_summary

    # piqe (lower is better) falls by 5 from p1 to p99 at every lambda: the condition works, aligned gap = +5
    frame = pd.DataFrame([{"generator": "G", "metric": "piqe", "scale": s, "target": t, "prompt_id": f"p{p}",
                           "seed": 0, "score": 50.0 - (5.0 if t == 99 else 0.0) + p}
                          for s in (0.5, 1.0) for t in (1, 99) for p in range(3)])
    means = frame.groupby(["generator", "metric", "scale", "target"], as_index=False).score.mean().rename(
        columns={"score": "mean"})
    gaps = scale_gap(means, frame)
    assert gaps.gap.tolist() == pytest.approx([-5.0, -5.0])
    assert aligned_gap_summary(gaps) == {"G | piqe": pytest.approx(5.0)}
