"""Issue 24: one inference unit per analysis, one decision rule per table, checked against independent computations.

* constructed data with a known cluster structure: the naive image-level paired t-test and the prompt-level one
  (what iqabench reports) disagree, both ways, and iqabench follows the prompt;
* every benchmark's table: its Holm column equals statsmodels' ``multipletests(method="holm")`` on its own
  p-value column, and no cell shows a mark ("n.s.", bold) that contradicts that column
  (:func:`assert_marks_agree`, applied to every typed table a benchmark builds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
from statsmodels.stats.multitest import multipletests

from iqabench.analysis.stats import ALPHA, MIN_UNITS, paired_statistics, unit_test
from iqabench.contracts.results import Headline, Result, Table

PROMPTS = [f"p{i}" for i in range(6)]


def assert_marks_agree(table: Table, head: Headline | None = None) -> None:
    """The table's Holm column is statsmodels' Holm of its p column (one family over all effect cells), every
    "n.s." mark shown follows it, and the headline's significance and bold follow its adjusted p-values."""
    from iqabench.reports.headline import cell_text
    from iqabench.reports.tables import display_frame

    frame = table.frame
    assert set(table.effects) == set(table.p_values), "every effect names its raw and its Holm p column"
    if table.effects:
        raw = np.concatenate([frame[table.p_values[c]].to_numpy(float) for c in table.effects])
        adjusted = np.concatenate([frame[table.effects[c]].to_numpy(float) for c in table.effects])
        finite = np.isfinite(raw)
        assert np.array_equal(finite, np.isfinite(adjusted))
        if finite.any():
            assert adjusted[finite] == pytest.approx(multipletests(raw[finite], method="holm")[1])
    shown = display_frame(frame, info=table)
    for column, p_column in table.effects.items():
        for text, p, value in zip(shown[column], frame[p_column], frame[column], strict=True):
            if not np.isfinite(value):
                continue
            marked = text.endswith(" n.s.")
            assert marked == (not (np.isfinite(p) and p < ALPHA)), (column, text, p)
    if head is None:
        return
    significant, bold = head.significant, head.bold
    assert not (bold & ~significant).to_numpy().any(), "bold only on significant cells"
    for j in range(bold.shape[1]):
        assert bold.iloc[:, j].sum() <= 1, "at most one bold cell per column"
    if head.signed:
        p = head.p_value.to_numpy(float).ravel()
        ok = np.isfinite(p)
        expected = np.zeros(p.shape, dtype=bool)
        if ok.any():
            expected[ok] = multipletests(p[ok], method="holm")[0]
        assert significant.to_numpy().ravel().tolist() == expected.tolist()
    for i in range(head.estimate.shape[0]):
        for j in range(head.estimate.shape[1]):
            if np.isfinite(head.estimate.iat[i, j]):
                assert cell_text(head, i, j).endswith(" n.s.") == bool(head.signed and not significant.iat[i, j])


# --- one inference unit: constructed cluster structures ---------------------------------------------------------

def _clustered(prompt_effects: list[float], within: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired scores: base 0, method = the prompt's effect + a within-prompt offset per seed."""
    diff = np.array([e + w for e in prompt_effects for w in within])
    prompts = np.repeat(PROMPTS[:len(prompt_effects)], len(within))
    return np.zeros(diff.size), diff, prompts


def test_images_of_one_prompt_are_not_independent_naive_significant_cluster_not():
    # each prompt's 5 seeds agree closely, but the prompts disagree: 30 "pairs" are really 6
    base, method, prompts = _clustered([1.2, 0.9, -0.4, 0.8, -0.3, 1.1], [-0.02, -0.01, 0.0, 0.01, 0.02])
    naive = sps.ttest_rel(method, base).pvalue
    per_prompt = pd.Series(method - base).groupby(prompts).mean()
    cluster = sps.ttest_1samp(per_prompt, 0.0).pvalue
    assert naive < 0.001 and cluster > 0.05  # the independent computations disagree
    out = paired_statistics(base, method, lower_better=False, clusters=prompts)
    assert out["p_value"] == pytest.approx(cluster) and out["n_units"] == 6 and out["unit"] == "prompt"
    assert out["n_pairs"] == 30
    assert out["wilcoxon_p_value"] == pytest.approx(sps.wilcoxon(per_prompt).pvalue)


def test_within_prompt_noise_that_averages_out_cluster_significant_naive_not():
    # every prompt's mean difference is ~0.5, but its seeds scatter by +-3 around it
    base, method, prompts = _clustered([0.5, 0.52, 0.48, 0.51, 0.49, 0.5], [3.0, -3.0, 3.0, -3.0, 0.0])
    naive = sps.ttest_rel(method, base).pvalue
    cluster = sps.ttest_1samp(pd.Series(method - base).groupby(prompts).mean(), 0.0).pvalue
    assert naive > 0.05 and cluster < 0.001
    assert paired_statistics(base, method, lower_better=False, clusters=prompts)["p_value"] == pytest.approx(cluster)


def test_one_seed_per_prompt_tests_images():
    values = np.array([0.3, 0.1, 0.4, 0.2, 0.5, 0.0, 0.2])
    test = unit_test(values, [f"p{i}" for i in range(values.size)])
    assert test.unit == "image" and test.n_units == 7
    assert test.p_value == pytest.approx(sps.ttest_1samp(values, 0.0).pvalue)


# --- one decision rule per table, in every benchmark ----------------------------------------------------------

def _sweep_frame(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 1, len(PROMPTS))
    rows = []
    for metric, fn in (("entropy", lambda t, p: t / 10 + effect[p] + rng.normal(0, 0.5)),
                       ("piqe", lambda t, p: 30 + 5 * effect[p] + rng.normal(0, 3))):
        for p, prompt in enumerate(PROMPTS):
            for target in (1.0, 50.0, 99.0):
                for seed_ in (0, 1):
                    rows.append({"generator": "G", "role": "generator", "metric": metric, "target": target,
                                 "scale": 1.0, "prompt_id": prompt, "seed": seed_, "score": fn(target, p)})
    return pd.DataFrame(rows)


def test_condition_sweep_correlation_marks_follow_a_cluster_permutation_test_and_holm():
    from iqabench.benchmarks.condition_sweep import correlation_headline, correlation_table, target_correlations

    frame = _sweep_frame()
    table = correlation_table(target_correlations(frame))
    assert (table.frame.unit == "prompt").all() and (table.frame.n_units == len(PROMPTS)).all()
    assert table.effects == {"aligned_spearman": "aligned_spearman_p_holm"}
    assert_marks_agree(table, correlation_headline(table))


def test_scale_sweep_gap_marks_follow_holm_of_prompt_level_paired_tests():
    from iqabench.benchmarks.scale_sweep import gap_at_max_scale, gap_headline, gap_table, scale_gap
    from iqabench.benchmarks.sweeps import mean_with_ci

    frame = _sweep_frame(5)
    frame = frame[frame.target != 50.0]
    gaps = scale_gap(mean_with_ci(frame, ["generator", "metric", "target", "scale"]), frame)
    # independent: the paired t-test on per-prompt mean differences (high target minus low), per metric
    for metric, row in gaps.set_index("metric").iterrows():
        mine = frame[frame.metric == metric].set_index(["prompt_id", "seed", "target"]).score.unstack()
        per_prompt = (mine[99.0] - mine[1.0]).groupby(level="prompt_id").mean()
        assert row.p_value == pytest.approx(sps.ttest_1samp(per_prompt, 0.0).pvalue)
    top = gap_table(gap_at_max_scale(gaps))
    assert_marks_agree(top, gap_headline(top))
    assert_marks_agree(gap_table(gaps))


def test_adversarial_gradcam_transfer_marks_follow_holm_over_all_cells():
    from iqabench.benchmarks.adversarial_gradcam import relgain_cell, transfer_table, transfer_typed

    rng = np.random.default_rng(0)
    prompts = np.repeat(PROMPTS, 2)
    base = 10.0 + rng.normal(0, 0.1, prompts.size)
    cells = [relgain_cell(method, m, base, base * f + rng.normal(0, s, base.size), prompts, False)
             for method, f in (("guidance on a", 1.5), ("adapter", 1.01)) for m, s in (("a", 0.1), ("b", 1.0))]
    table, head = transfer_typed(transfer_table(cells, ["guidance on a", "adapter"], ["a", "b"]),
                                 pd.DataFrame(cells), ["a", "b"])
    assert_marks_agree(table, head)
    assert head.significant.loc["guidance on a", "a"] and not head.significant.loc["adapter", "b"]


def test_study_win_rates_test_participants_against_no_preference():
    from iqabench.benchmarks.study.analyze import win_rate_table, win_rates

    rows = []
    for p in range(8):
        rows.append({"participant": f"u{p}", "pair_id": "x", "a": "A", "b": "B", "score_a": 1.0})
        rows.append({"participant": f"u{p}", "pair_id": "y", "a": "A", "b": "C", "score_a": float(p % 2)})
        rows.append({"participant": f"u{p}", "pair_id": "z", "a": "B", "b": "C", "score_a": 0.0 if p < 7 else 0.5})
    table = win_rate_table(win_rates(pd.DataFrame(rows)))
    assert (table.frame.unit == "participant").all() and (table.frame.n_units == 8).all()
    assert_marks_agree(table)


def test_relgain_and_seed_consistency_runs_follow_the_rule_and_record_units(tmp_path):
    from iqabench.api import run
    from iqabench.contracts.specs import RunSpec
    from iqabench.reports.persist import load_result
    from iqabench.reports.tables import display_frame
    from iqabench.store.store import Store

    results = {}
    for bench in ("relgain", "seed-consistency"):
        spec = RunSpec(bench, ["tiny-sd[steps=2]"], metrics=["entropy"], limit=3, seeds=[0, 1], batch_size=6)
        outcome = run(spec, out=tmp_path, run_id=bench)
        results[bench] = (outcome.result, load_result(Store(tmp_path), bench))
    for bench, name, effect in (("relgain", "relgain", "relgain"), ("relgain", "paired_statistics", "improvement"),
                                ("seed-consistency", "seed_consistency", "mean")):
        for result in results[bench]:  # as analysed, and as read back from result.json (schema 2)
            table = result.table(name)
            assert effect in table.effects and (table.frame.unit == "prompt").all()
            assert (table.frame.n_units == 3).all() and (table.frame.n_images == 6).all()
            assert_marks_agree(table, result.headline if result.headline.source == name else None)
            # 3 prompts < MIN_UNITS: the CI is flagged, not printed, and the footnote says on how many prompts
            assert MIN_UNITS > 3 and "too few prompts for a 95% CI" in " ".join(
                display_frame(table.frame, info=table)[effect])
            assert "Inference unit: the prompt (n = 3 prompts" in table.footnote
    saved = results["relgain"][1]
    assert saved.per_item is not None and set(saved.per_item.frame.generator) == {"tiny-sd[steps=2]"}


def test_no_typed_table_shows_a_mark_that_contradicts_its_p_column():
    """Generic: a table whose CI excludes 0 but whose Holm p says no, and one whose CI includes 0 but whose p says
    yes -- the marks follow the p-value column, whatever the brackets say."""
    from iqabench.analysis.decisions import effect_table, long_headline

    frame = pd.DataFrame({"generator": ["a", "b", "c"], "metric": ["m", "m", "m"], "gain": [2.0, 1.0, 0.5],
                          "gain_ci_low": [0.5, -0.1, -0.1], "gain_ci_high": [3.0, 2.0, 1.0],
                          "p": [0.03, 0.028, 0.001], "n_units": [20, 20, 20]})
    table = effect_table(frame, {"gain": "p"}, unit="prompt")
    head = long_headline("t", table.frame, row_key="generator", column_key="metric", value="gain", quantity="gain",
                         signed=True, higher_better=True, p_column="p", unit="prompt")
    assert_marks_agree(table, head)
    # a: p = 0.03 < 0.05 and its CI excludes 0, but Holm over the 3 cells gives 0.056: n.s., not bold
    assert table.frame.gain_p_holm.tolist() == pytest.approx([0.056, 0.056, 0.003])
    assert head.significant["m"].tolist() == [False, False, True] and head.bold["m"].tolist() == [False, False, True]


def test_ties_and_all_not_significant_columns_get_no_bold():
    from iqabench.analysis.decisions import long_headline

    frame = pd.DataFrame({"generator": ["a", "b", "c", "a", "b", "c"], "metric": ["tie"] * 3 + ["ns"] * 3,
                          "v": [0.0, 0.0, -1.0, 1.0, 2.0, 3.0], "v_ci_low": [np.nan] * 6, "v_ci_high": [np.nan] * 6,
                          "p": [1e-4, 1e-4, 1e-4, 0.5, 0.6, 0.7]})
    head = long_headline("t", frame, row_key="generator", column_key="metric", value="v", quantity="v", signed=True,
                         higher_better=True, p_column="p")
    assert not head.bold.to_numpy().any()  # "tie": two significant cells share the best value; "ns": none passes
    level = long_headline("t", frame, row_key="generator", column_key="metric", value="v", quantity="v",
                          signed=False, higher_better=True)
    assert not level.bold.to_numpy().any()  # a level has no test: never bold (e.g. 14 GenEval cells at 0.00)


def test_result_keeps_tables_and_their_contract_together():
    frame = pd.DataFrame({"x": [1.0]})
    result = Result("b")
    table = result.add_table("t", frame, footnote="why")
    assert result.table("t") is table and result.tables["t"] is frame
    result.tables["t"] = pd.DataFrame({"x": [2.0]})  # replaced behind the contract's back: no stale footnote
    assert result.table("t").footnote == ""


def test_fid_bootstrap_interval_comes_from_torch_fidelity_resamples_and_widens_with_fewer_images():
    import torch

    from iqabench.benchmarks.fid_topk.features import fid_bootstrap_ci

    gen = torch.from_numpy(np.random.default_rng(0).normal(0.5, 1.0, (400, 8)).astype(np.float32))
    ref = torch.from_numpy(np.random.default_rng(1).normal(0.0, 1.0, (400, 8)).astype(np.float32))
    wide = fid_bootstrap_ci(gen[:40], ref, 60)
    narrow = fid_bootstrap_ci(gen, ref, 60)
    assert wide[0] < wide[1] and narrow[0] < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]  # 10x the images: a tighter interval
    assert fid_bootstrap_ci(gen, ref, 60) == narrow  # seeded: the same resamples every time


def test_fid_topk_refuses_several_seeds_before_any_work():
    from iqabench.benchmarks.fid_topk.benchmark import FidTopK
    from iqabench.contracts.generators import GeneratorPool
    from iqabench.contracts.specs import RunSpec

    spec = RunSpec("fid-topk", ["tiny-sd"], seeds=[0, 1, 2], options={"reference": "/nonexistent"})
    with pytest.raises(ValueError, match="one image per caption .* gave 3 seeds; pass one seed, e.g. --seeds 0"):
        FidTopK().plan(spec, GeneratorPool())


def test_scale_sweep_headline_marks_an_estimate_as_target_gap_marks_it():
    """The headline (largest lambda) is a subset of target_gap: its cells carry target_gap's Holm decision, never a
    re-adjustment over the smaller family (which here would call two n.s. estimates significant)."""
    from statsmodels.stats.multitest import multipletests

    from iqabench.benchmarks.scale_sweep import gap_at_max_table, gap_headline, gap_table

    p = [0.01, 0.04, 0.02, 0.03]  # (lambda 0.5: piqe, entropy), (lambda 1.0: piqe, entropy)
    gaps = pd.DataFrame({
        "generator": "iqa-adapter:a", "metric": ["piqe", "entropy"] * 2, "direction": "higher is better",
        "scale": [0.5, 0.5, 1.0, 1.0], "low_target": "p1", "high_target": "p99", "aligned_gap": [1.0, 2.0, 3.0, 4.0],
        "aligned_gap_ci_low": [0.5, 1.0, 1.5, 2.0], "aligned_gap_ci_high": [1.5, 3.0, 4.5, 6.0],
        "gap": [1.0, 2.0, 3.0, 4.0], "p_value": p, "n": 40, "n_units": 20, "unit": "prompt", "n_images": 40,
        "ci_method": "cluster BCa"})
    every = gap_table(gaps)
    top = gap_at_max_table(every)
    head = gap_headline(top)
    family = multipletests(p, method="holm")[0].tolist()
    assert family[2:] == [False, False] and multipletests(p[2:], method="holm")[0].tolist() == [True, True]
    assert head.significant.loc["iqa-adapter:a", ["piqe", "entropy"]].tolist() == family[2:]
    assert top.significant("aligned_gap") == every.significant("aligned_gap")[2:]
    assert_marks_agree(every)
