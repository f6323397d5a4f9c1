"""Confidence intervals, paired tests and multiple-comparison correction of iqabench.analysis.stats, checked by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from iqabench.analysis.stats import describe_method, holm, mean_ci, paired_statistics


def test_iid_values_get_scipys_bca_interval():
    values = np.random.default_rng(3).gamma(2.0, 1.0, size=60)
    est = mean_ci(values, seed=7)
    ref = sps.bootstrap((values,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(7))
    assert est.method == "BCa" and est.n == est.n_clusters == 60
    assert (est.ci_low, est.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert est.value == pytest.approx(values.mean())


def test_one_value_per_prompt_is_not_clustered():
    values = np.arange(10.0)
    assert mean_ci(values, clusters=[f"p{i}" for i in range(10)]) == mean_ci(values)


def test_cluster_bootstrap_with_equal_seeds_is_the_bootstrap_of_prompt_means():
    # Hand computation: with every prompt holding the same number of seeds, the pooled mean of a resample of
    # prompts equals the mean of their prompt means, so the cluster bootstrap IS the bootstrap of prompt means.
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 1, 15)
    values = np.repeat(prompt_effect, 4) + rng.normal(0, 0.2, 60)
    clusters = np.repeat([f"prompt-{i}" for i in range(15)], 4)
    prompt_means = values.reshape(15, 4).mean(axis=1)
    for method in ("percentile", "BCa"):
        clustered = mean_ci(values, clusters, method=method, seed=5)
        # paired=True makes scipy draw resamples of prompt indices, the same draws as the clustered call
        by_hand = sps.bootstrap((prompt_means,), np.mean, paired=True, n_resamples=2000, method=method,
                                rng=np.random.default_rng(5)).confidence_interval
        assert clustered.method == f"cluster {method}" and clustered.n == 60 and clustered.n_clusters == 15
        assert (clustered.ci_low, clustered.ci_high) == pytest.approx((by_hand.low, by_hand.high), rel=1e-9)


def test_cluster_bootstrap_is_wider_than_pretending_seeds_are_independent():
    # Four identical seeds per prompt carry the information of one image: the naive interval is ~sqrt(4) too narrow.
    prompt_means = np.random.default_rng(2).normal(0, 1, 40)
    values = np.repeat(prompt_means, 4)
    clusters = np.repeat(np.arange(40), 4)
    naive = mean_ci(values, method="percentile")
    clustered = mean_ci(values, clusters, method="percentile")
    ratio = (clustered.ci_high - clustered.ci_low) / (naive.ci_high - naive.ci_low)
    assert ratio == pytest.approx(2.0, rel=0.15)


def test_cluster_percentile_bounds_by_exact_enumeration():
    # Three prompts with 3, 1 and 2 seeds. Enumerating all 27 equally likely resamples of prompts gives the exact
    # bootstrap distribution of the pooled mean; each atom has mass >= 1/27 > 2.5%, so the 95% percentile interval
    # is exactly [smallest atom, largest atom] = [lowest prompt mean, highest prompt mean].
    groups = {"a": [1.0, 2.0, 3.0], "b": [10.0], "c": [4.0, 8.0]}
    values = np.concatenate(list(groups.values()))
    clusters = np.concatenate([[k] * len(v) for k, v in groups.items()])
    atoms = []
    for draw in itertools.product(groups, repeat=3):
        pooled = np.concatenate([groups[k] for k in draw])
        atoms.append(pooled.mean())
    est = mean_ci(values, clusters, method="percentile", n_resamples=20000)
    assert est.method == "cluster percentile" and est.n_clusters == 3
    assert est.ci_low == pytest.approx(min(atoms)) and est.ci_low == pytest.approx(2.0)
    assert est.ci_high == pytest.approx(max(atoms)) and est.ci_high == pytest.approx(10.0)
    assert est.value == pytest.approx(values.mean())


def test_degenerate_inputs():
    assert mean_ci([1.0]).method == "none" and np.isnan(mean_ci([1.0]).ci_low)
    same = mean_ci([2.0, 2.0, 2.0])
    assert (same.ci_low, same.ci_high) == (2.0, 2.0)
    assert mean_ci([1.0, np.nan, 3.0]).n == 2
    with pytest.raises(ValueError, match="one per value"):
        mean_ci([1.0, 2.0], clusters=["a"])
    with pytest.raises(ValueError, match="method"):
        mean_ci([1.0, 2.0], method="studentized")


def test_paired_statistics_report_wilcoxon_next_to_t():
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    method = np.array([1.4, 2.9, 3.1, 3.5, 6.2, 6.8])
    out = paired_statistics(base, method, lower_better=False)
    ref = sps.wilcoxon(method - base)
    assert out["wilcoxon_statistic"] == pytest.approx(ref.statistic)
    assert out["wilcoxon_p_value"] == pytest.approx(ref.pvalue)
    assert out["improvement_ci_low"] <= out["improvement"] <= out["improvement_ci_high"]
    flipped = paired_statistics(base, method, lower_better=True)
    assert flipped["wilcoxon_p_value"] == pytest.approx(ref.pvalue)
    assert flipped["improvement"] == pytest.approx(-out["improvement"])


def test_holm_by_hand():
    # sorted p: 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> monotone: 0.03, 0.06, 0.06
    adjusted = holm([0.04, 0.01, np.nan, 0.03])
    assert adjusted[[1, 3, 0]].tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adjusted[2])
    assert holm([0.9, 0.8]).tolist() == pytest.approx([1.0, 1.0])


def test_method_is_named_for_footnotes():
    text = describe_method(["cluster BCa", "BCa", "none"])
    assert "95% CI" in text and "prompts" in text and "images" in text and "BCa" in text
    assert "fewer than 2" in describe_method("none")


def test_mean_of_task_means_by_exact_enumeration():
    # Two tasks; task "a" has prompts with means 0 and 1 (2 images each), task "b" one prompt per image: 1, 1, 0.
    # Point: mean(0.5, 2/3). The 4 x 27 equally likely stratified resamples (prompts redrawn within each task),
    # enumerated, give the exact bootstrap distribution and so the exact 2.5% / 97.5% percentile bounds.
    from iqabench.analysis.stats import mean_of_strata_ci

    values = [0, 0, 1, 1, 1, 1, 0]
    strata = ["a"] * 4 + ["b"] * 3
    clusters = ["a0", "a0", "a1", "a1", "b0", "b1", "b2"]
    est = mean_of_strata_ci(values, strata, clusters, n_resamples=40000)
    assert est.value == pytest.approx((0.5 + 2 / 3) / 2)
    assert est.method == "stratified cluster percentile" and est.n_clusters == 5
    atoms, weights = [], []
    for a in itertools.product([0.0, 1.0], repeat=2):
        for b in itertools.product([1.0, 1.0, 0.0], repeat=3):
            atoms.append((np.mean(a) + np.mean(b)) / 2)
            weights.append(1 / (4 * 27))
    order = np.argsort(atoms)
    cdf = np.cumsum(np.array(weights)[order])
    exact_low = np.array(atoms)[order][np.searchsorted(cdf, 0.025)]
    exact_high = np.array(atoms)[order][np.searchsorted(cdf, 0.975)]
    assert est.ci_low == pytest.approx(exact_low, abs=1e-9)
    assert est.ci_high == pytest.approx(exact_high, abs=1e-9)


def test_statistic_ci_resamples_whole_clusters_like_a_hand_written_bootstrap():
    from iqabench.analysis.stats import pearson, statistic_ci

    rng = np.random.default_rng(7)
    clusters = np.repeat(["a", "b", "c", "d", "e"], 3)
    x = rng.normal(size=15)
    y = x + rng.normal(size=15)
    est = statistic_ci(pearson, x, y, clusters=clusters, n_resamples=400, seed=11)
    # by hand: draw 5 of the 5 prompts with replacement, keep all 3 rows of each, correlate, take the 2.5/97.5%
    picks = np.random.default_rng(11).integers(0, 5, (400, 5))
    draws = [np.corrcoef(x[rows], y[rows])[0, 1]
             for rows in (np.concatenate([np.arange(3 * u, 3 * u + 3) for u in pick]) for pick in picks)]
    assert est.value == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert (est.ci_low, est.ci_high) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])))
    assert est.method == "cluster percentile" and est.n == 15 and est.n_clusters == 5


def test_spearman_ci_matches_scipy_and_contains_its_estimate_with_tied_targets():
    from scipy import stats

    from iqabench.analysis.stats import spearman_ci

    rng = np.random.default_rng(4)
    prompts = np.repeat(np.arange(6), 6)
    x = np.tile(np.repeat([1.0, 50.0, 99.0], 2), 6)  # three target levels: many ties
    y = x / 10 + rng.normal(0, 1, 6)[prompts] + rng.normal(0, 0.5, x.size)
    est = spearman_ci(x, y, prompts)
    assert est.value == pytest.approx(stats.spearmanr(x, y).statistic)
    # re-ranking each resample would put the whole bootstrap distribution above the estimate here
    assert est.ci_low < est.value < est.ci_high
