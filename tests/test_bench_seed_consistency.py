"""seed-consistency: per-generation RelGain, its distribution summary, and an offline run on the tiny models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iqabench.api import run
from iqabench.benchmarks.seed_consistency import per_generation_gains, seeded_spec, summarize_gains
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner


def _frame(base: list[float], method: list[float], metric: str = "m") -> pd.DataFrame:
    rows = []
    for i, (b, g) in enumerate(zip(base, method, strict=True)):
        common = {"generator": "G", "metric": metric, "prompt_id": f"p{i // 2}", "prompt": f"prompt {i // 2}",
                  "seed": i % 2}
        rows.append({**common, "role": "baseline", "score": b})
        rows.append({**common, "role": "generator", "score": g})
    return pd.DataFrame(rows)


def test_per_generation_gain_pairs_the_same_prompt_and_seed():
    frame = _frame([10.0, 20.0, 40.0, 50.0], [11.0, 15.0, 40.0, 60.0])
    gains = per_generation_gains(frame, {"m": False})
    assert gains.relgain.tolist() == pytest.approx([10.0, -25.0, 0.0, 20.0])
    flipped = per_generation_gains(frame, {"m": True})  # lower is better: the same changes flip sign
    assert flipped.relgain.tolist() == pytest.approx([-10.0, 25.0, 0.0, -20.0])


def test_summary_mean_median_improved_and_near_zero_shares():
    frame = _frame([10.0, 10.0, 10.0, 10.0], [11.0, 9.5, 10.05, 12.0])  # gains 10, -5, 0.5, 20
    summary = summarize_gains(per_generation_gains(frame, {"m": False}), near_zero=1.0).iloc[0]
    assert summary["n"] == 4
    assert summary["mean"] == pytest.approx(6.375)
    assert summary["median"] == pytest.approx(5.25)
    assert summary["improved_share"] == pytest.approx(0.75)
    assert summary["worse_share"] == pytest.approx(0.25)
    assert summary["near_zero_share"] == pytest.approx(0.25)
    assert summary["mean_ci_low"] <= summary["mean"] <= summary["mean_ci_high"]


def test_zero_baseline_is_excluded_and_missing_scores_counted():
    frame = _frame([0.0, 10.0, 10.0, np.nan], [1.0, 12.0, 8.0, 3.0])
    summary = summarize_gains(per_generation_gains(frame, {"m": False})).iloc[0]
    assert summary["n"] == 2 and summary["mean"] == pytest.approx(0.0)
    assert summary["n_near_zero_baseline_excluded"] == 1 and summary["n_missing"] == 1


def test_needs_several_seeds():
    with pytest.raises(ValueError, match="several seeds per prompt"):
        seeded_spec(RunSpec("seed-consistency", ["tiny-sd"], seeds=[0]))
    assert seeded_spec(RunSpec("seed-consistency", ["tiny-sd"], options={"n_seeds": 5})).seeds == [0, 1, 2, 3, 4]


def test_offline_run_matches_hand_computation_and_shares_relgain_images(tmp_path):
    spec = RunSpec("seed-consistency", ["tiny-sd[steps=2]"], metrics=["piqe", "entropy"], limit=2, seeds=[0, 1, 2],
                   batch_size=3)
    outcome = run(spec, out=tmp_path)
    result = outcome.result
    per_gen = result.tables["per_generation"]
    assert len(per_gen) == 2 * 3 * 2  # prompts x seeds x metrics
    hand = (per_gen.generator_score - per_gen.baseline_score) / per_gen.baseline_score.abs() * 100
    hand = np.where(per_gen.metric == "piqe", -hand, hand)
    assert np.allclose(per_gen.relgain, hand)
    table = result.tables["seed_consistency"].set_index("metric")
    for metric in ("piqe", "entropy"):
        values = per_gen[per_gen.metric == metric].relgain
        assert table.loc[metric, "mean"] == pytest.approx(values.mean())
        assert table.loc[metric, "improved_share"] == pytest.approx((values > 0).mean())
    assert "relgain_distribution" in result.figures and "<svg" in outcome.report.read_text("utf-8")
    relgain = Runner(RunSpec(**{**spec.to_dict(), "benchmark": "relgain"}), tmp_path).summarize_plan()
    assert relgain.n_unique_images == 12 and relgain.n_to_generate == 0
