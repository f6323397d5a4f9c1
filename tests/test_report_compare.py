"""`iqabench report A B` as a comparison, `list runs`, `--version` and a fast `--help`: on hand-built saved runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from iqabench.analysis.compare import paired_differences
from iqabench.analysis.decisions import long_headline, wide_headline
from iqabench.analysis.stats import holm, paired_statistics
from iqabench.cli import app
from iqabench.contracts.results import PerItemScores, Result
from iqabench.reports import save_result
from iqabench.reports.compare import render_comparison, resolve_run
from iqabench.reports.persist import load_result
from iqabench.store.store import Store

PROMPTS = [f"p{i}" for i in range(6)]
SEEDS = [0, 1]


def _scores_run(store: Store, run_id: str, generator: str, shift: float, created: str) -> np.ndarray:
    rng = np.random.default_rng(len(run_id))
    base = np.repeat(np.linspace(20, 40, len(PROMPTS)), len(SEEDS))
    piqe = base - shift + rng.normal(0, 0.5, base.size)  # lower is better
    entropy = 6 + 0.01 * rng.normal(size=base.size)
    per_item = pd.DataFrame({"generator": generator, "prompt_id": np.repeat(PROMPTS, len(SEEDS)),
                             "prompt": "a cat", "seed": SEEDS * len(PROMPTS), "piqe": piqe, "entropy": entropy})
    rows = []
    for metric, values, direction in (("piqe", piqe, "lower is better"), ("entropy", entropy, "higher is better")):
        rows.append({"generator": generator, "metric": metric, "direction": direction, "score": values.mean(),
                     "score_ci_low": values.mean() - 1, "score_ci_high": values.mean() + 1, "n": values.size})
    store.write_run_json(run_id, {"run_id": run_id, "benchmark": "scores", "status": "complete", "updated": created,
                                  "spec": {"benchmark": "scores", "generators": [generator],
                                           "metrics": ["piqe", "entropy"]},
                                  "metrics": {"piqe": "fp", "entropy": "fp"}})
    long = per_item.melt(id_vars=["generator", "prompt_id", "prompt", "seed"], value_vars=["piqe", "entropy"],
                         var_name="metric", value_name="score")
    scores = pd.DataFrame(rows)
    head = long_headline("scores", scores, row_key="generator", column_key="metric", value="score", quantity="score",
                         signed=False, higher_better={"piqe": False, "entropy": True}, n_units_column=None)
    save_result(store, run_id, Result("scores", tables={"scores": scores, "scores_per_item": per_item},
                                      headlines=[head], per_item=PerItemScores(long.assign(
                                          condition="", lower_better=long.metric == "piqe"))))
    (store.run_dir(run_id) / "report.html").write_text("the run's own report")
    return piqe


@pytest.fixture()
def two_runs(tmp_path):
    store = Store(tmp_path / "store")
    base = _scores_run(store, "run-base", "sd15", 0.0, "2026-01-01T10:00:00+00:00")
    other = Store(tmp_path / "elsewhere")  # a run in another store, named by its folder
    better = _scores_run(other, "run-new", "iqa-adapter:x", 2.0, "2026-01-02T10:00:00+00:00")
    return store, other, base, better


def test_paired_differences_match_a_hand_computed_paired_test_with_holm(two_runs):
    store, other, base, better = two_runs
    results = {"run-base": load_result(store, "run-base"), "run-new": load_result(other, "run-new")}
    typed = paired_differences(results)
    table = typed.frame.set_index("metric")
    row = table.loc["piqe"]
    ref = paired_statistics(base, better, lower_better=True, clusters=np.repeat(PROMPTS, len(SEEDS)))
    assert row.difference == pytest.approx(ref["improvement"]) and row.difference > 0  # lower piqe = better
    assert row.difference_ci_low == pytest.approx(ref["improvement_ci_low"])
    assert row.t_p == pytest.approx(ref["p_value"]) and row.wilcoxon_p == pytest.approx(ref["wilcoxon_p_value"])
    # the test is at the prompt: the paired t on per-prompt mean differences, n = 6 prompts (not 12 images)
    per_prompt = (better - base).reshape(len(PROMPTS), len(SEEDS)).mean(axis=1)
    assert row.t_p == pytest.approx(sps.ttest_1samp(-per_prompt, 0.0).pvalue)
    assert row.n_images == 12 and row.n_units == 6 and row.unit == "prompt" and row.ci_method == "cluster BCa"
    assert table.difference_p_holm.tolist() == pytest.approx(holm(table.t_p.to_numpy()).tolist())
    assert table.difference_p_holm.tolist() == pytest.approx(multipletests(table.t_p, method="holm")[1].tolist())
    assert typed.effects == {"difference": "difference_p_holm"}
    assert "Holm" in typed.footnote and "Inference unit: the prompt (n = 6 prompts" in typed.footnote


def test_comparison_page_merges_both_runs_and_never_touches_their_reports(two_runs):
    store, other, _, _ = two_runs
    refs = [resolve_run("run-base", store.root), resolve_run(str(other.run_dir("run-new")), store.root)]
    assert refs[1].store.root == other.root and refs[1].run_id == "run-new"
    path = render_comparison(refs)
    assert path.parent == store.root / "reports" and path.name.startswith("compare-run-base_vs_run-new-")
    html = path.read_text()
    merged = html.split("Merged: score")[1].split("</table>")[0]
    assert "sd15 (run-base)" in merged and "iqa-adapter:x (run-new)" in merged
    assert "Paired differences against run-base" in html
    for name in ("merged_scores", "paired_differences"):  # named after the quantity, not merged_1
        for suffix in ("csv", "tex", "md"):
            assert path.with_name(f"{path.stem}.{name}.{suffix}").is_file()
    assert (store.run_dir("run-base") / "report.html").read_text() == "the run's own report"
    assert (other.run_dir("run-new") / "report.html").read_text() == "the run's own report"
    with pytest.raises(ValueError, match="never overwrites a run's own report"):
        render_comparison(refs, store.run_dir("run-base") / "report.html")


def test_cli_report_list_runs_and_version(two_runs):
    store, other, _, _ = two_runs
    runner = CliRunner()
    result = runner.invoke(app, ["report", "run-base", str(other.run_dir("run-new")), "--out", str(store.root)])
    assert result.exit_code == 0, result.output
    printed = result.output.split("report: ")[1].strip()
    assert printed.startswith(str(store.root / "reports")) and printed.endswith(".html")
    missing = runner.invoke(app, ["report", "no-such-run", "--out", str(store.root)])
    assert missing.exit_code == 2 and "no run 'no-such-run'" in missing.output

    listing = runner.invoke(app, ["list", "runs", "--out", str(store.root)], env={"COLUMNS": "80"})
    assert listing.exit_code == 0, listing.output
    assert "run-base" in listing.output and "scores" in listing.output and "sd15" in listing.output
    assert "complete" in listing.output and "2026-01-01 10:00" in listing.output
    assert max(len(line) for line in listing.output.splitlines()) <= 80

    version = runner.invoke(app, ["--version"])
    from iqabench import __version__

    assert version.exit_code == 0 and version.output.strip() == f"iqabench {__version__}"


def test_terminal_summary_fits_80_columns_and_shows_generators_and_all_columns(capsys):
    from rich.console import Console

    from iqabench.cli import summary

    tasks = ["single_object", "two_object", "counting", "colors", "position", "color_attr", "overall"]
    table = pd.DataFrame({"generator": ["sdxl-long-generator-name", "iqa-adapter:x"],
                          **{t: [0.5, 0.6] for t in tasks}, **{f"{t}_ci_low": [0.4, 0.5] for t in tasks},
                          **{f"{t}_ci_high": [0.6, 0.7] for t in tasks}})
    for t in tasks:  # an effect, tested: the second row is significant in every column
        table[f"{t}_p"] = [0.5, 0.001]
    head = wide_headline("geneval", table, row_key="generator", columns=tasks, quantity="GenEval accuracy",
                         signed=True, higher_better=True)
    console = Console(width=80, force_terminal=False, record=True)
    original, summary.out_console = summary.out_console, console
    try:
        summary.print_summary(Result("geneval", tables={"geneval": table}, headlines=[head]))
    finally:
        summary.out_console = original
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for name in ["sdxl-long-generator-name", "iqa-adapter:x", *tasks]:
        assert name in text, name
    assert "0.600 (too few prompts for a 95% CI) *" not in text  # no n_units: CIs shown
    assert "0.600 [0.500, 0.700] *" in text  # the best significant cell per column marked


def test_help_imports_no_heavy_library():
    code = ("import sys; sys.argv = ['iqabench', '--help']\n"
            "from iqabench.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'diffusers', 'pyiqa', 'transformers', 'pandas', 'matplotlib')"
            " if m in sys.modules)\n"
            "print('HEAVY', heavy)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "HEAVY []" in run.stdout, run.stdout[-500:]
    assert "train" in run.stdout and "report" in run.stdout  # plugin and core commands still listed


def _sweep_run(store: Store, run_id: str, generator: str, shift: float) -> None:
    rng = np.random.default_rng(sum(map(ord, run_id)))  # distinct noise per run (identical scores are left out)
    rows = [{"generator": generator, "condition": condition, "prompt_id": p, "prompt": f"a photo of {p}", "seed": s,
             "piqe": 30 - level / 10 - shift + rng.normal(0, 0.3), "entropy": 6 + rng.normal(0, 0.01)}
            for condition, level in (("baseline", 0), ("p1", 1), ("p99", 99)) for p in PROMPTS for s in SEEDS]
    store.write_run_json(run_id, {"run_id": run_id, "benchmark": "condition-sweep", "status": "complete",
                                  "spec": {"benchmark": "condition-sweep", "generators": [generator]}})
    frame = pd.DataFrame(rows)
    long = frame.melt(id_vars=["generator", "condition", "prompt_id", "prompt", "seed"], value_vars=["piqe", "entropy"],
                      var_name="metric", value_name="score")
    save_result(store, run_id, Result("condition-sweep", tables={"per_image": frame},
                                      per_item=PerItemScores(long.assign(lower_better=long.metric == "piqe"))))


def test_sweeps_are_paired_per_condition_and_the_page_names_the_tables_it_compared(tmp_path):
    store = Store(tmp_path / "store")
    _sweep_run(store, "sweep-a", "iqa-adapter:a", 0.0)
    _sweep_run(store, "sweep-b", "iqa-adapter:b", 1.0)
    store.write_run_json("fid-c", {"run_id": "fid-c", "benchmark": "fid-topk", "status": "complete",
                                   "spec": {"benchmark": "fid-topk", "generators": ["sd15"]}})
    save_result(store, "fid-c", Result("fid-topk", tables={"fid_topk_numeric": pd.DataFrame(
        {"generator": ["sd15"], "FID": [80.0]})}))
    results = {r: load_result(store, r) for r in ("sweep-a", "sweep-b", "fid-c")}
    table = paired_differences(results).frame
    # p1 is paired with p1 only: 3 conditions x 2 metrics, never p1 against p99
    assert sorted(zip(table.condition, table.metric, strict=True)) == sorted(
        (c, m) for c in ("baseline", "p1", "p99") for m in ("piqe", "entropy"))
    assert (table.run == "sweep-b").all() and (table.n_images == len(PROMPTS) * len(SEEDS)).all()
    assert (table.n_units == len(PROMPTS)).all()
    piqe = table[table.metric == "piqe"].set_index("condition").difference
    assert piqe.tolist() == pytest.approx([1.0] * 3, abs=0.3)  # 1 point lower piqe = better, at every condition
    html = render_comparison([resolve_run(r, store.root) for r in results]).read_text()
    sources = html.split('class="paired-sources"')[1].split("</ul>")[0]
    assert "sweep-a: compared item by item from table <code>per_item_scores</code>" in sources
    assert "(generator, condition, prompt_id, seed)" in sources
    assert "fid-c: not compared pairwise" in sources and "no per-item scores" in sources


def test_identical_images_are_left_out_with_a_note_and_holm_sits_next_to_the_difference(two_runs):
    store, other, _, _ = two_runs
    _scores_run(store, "run-same", "sd15", 0.0, "2026-01-03T10:00:00+00:00")  # same rng, same scores as run-base
    results = {"run-base": load_result(store, "run-base"), "run-same": load_result(store, "run-same"),
               "run-new": load_result(other, "run-new")}
    typed = paired_differences(results)
    table = typed.frame
    assert set(table.run) == {"run-new"}  # run-same's every difference is exactly 0: not a test, a note
    assert "identical images" in typed.footnote and "sd15 (run-same) vs sd15 (run-base), piqe" in typed.footnote
    # issue 25's one wording (iqabench.analysis.identical)
    assert "no effect to measure, not a measured 0" in typed.footnote
    columns = list(table.columns)
    assert columns[columns.index("difference_ci_high") + 1:][:2] == ["difference_p_holm", "t_p"]
    from iqabench.reports.tables import display_frame

    # the marks read the Holm column, never the CI: a CI clear of 0 with p_holm >= 0.05 is still "n.s."
    table.loc[table.metric == "entropy", "difference_p_holm"] = 0.2
    table.loc[table.metric == "piqe", "difference_p_holm"] = 0.01
    shown = display_frame(table, info=typed).set_index("metric").difference
    assert shown["entropy"].endswith(" n.s.") and not shown["piqe"].endswith(" n.s.")


def test_relgain_baselines_are_not_paired_across_runs(tmp_path):
    store = Store(tmp_path / "store")
    for run_id, shift in (("rg-a", 0.0), ("rg-b", 1.0)):
        items = pd.DataFrame({"generator": "adapter", "baseline": "sd15", "prompt_id": np.repeat(PROMPTS, 2),
                              "prompt": np.repeat([f"a photo of {p}" for p in PROMPTS], 2),
                              "seed": SEEDS * len(PROMPTS), "metric": "entropy",
                              "generator_score": np.arange(12.0) + shift * np.linspace(0, 1, 12),
                              "baseline_score": np.arange(12.0)})
        store.write_run_json(run_id, {"run_id": run_id, "benchmark": "relgain", "status": "complete"})
        # relgain's PerItemScores hold the generators' scores only (benchmarks/relgain.py)
        per_item = PerItemScores(items.assign(condition="", score=items.generator_score, lower_better=False))
        save_result(store, run_id, Result("relgain", tables={"relgain_per_item": items}, per_item=per_item))
    table = paired_differences({r: load_result(store, r) for r in ("rg-a", "rg-b")}).frame
    assert table.generator.tolist() == ["adapter"] and table.vs_generator.tolist() == ["adapter"]


def test_single_run_report_file_is_not_named_compare(two_runs):
    store, _, _, _ = two_runs
    path = render_comparison([resolve_run("run-base", store.root)])
    assert path.parent == store.root / "reports" and path.name.startswith("report-run-base-")
