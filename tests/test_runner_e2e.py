"""End to end on the tiny models: RelGain runs, resumes after SIGKILL, shares the cache, reports failures."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from iqabench.api import run
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner
from iqabench.store.store import Store

SPEC = dict(benchmark="relgain", generators=["tiny-sd"], metrics=["piqe", "entropy"], prompts="smoke", limit=3,
            seeds=[0, 1], batch_size=2)


def test_relgain_offline_end_to_end(tmp_path):
    outcome = run(RunSpec(**SPEC), out=tmp_path)
    assert outcome.plan.n_unique_images == 12 and outcome.plan.n_to_generate == 12
    table = outcome.result.tables["relgain"]
    assert set(table["metric"]) == {"piqe", "entropy"}
    assert table["baseline"].iloc[0] == "tiny-sd[guidance_scale=1.0]"
    assert (table["n"] == 6).all()
    # RelGain in the table equals a hand computation from the per-item scores.
    per_item = outcome.result.tables["relgain_per_item"]
    for metric, lower_better in [("piqe", True), ("entropy", False)]:
        rows = per_item[per_item.metric == metric]
        hand = ((rows.generator_score - rows.baseline_score) / rows.baseline_score.abs() * 100).to_numpy()
        hand = -hand if lower_better else hand
        assert table.set_index("metric").loc[metric, "relgain"] == pytest.approx(hand.mean())
        assert np.allclose(rows.relgain.to_numpy(), hand)
    report = outcome.report.read_text("utf-8")
    assert "relgain" in report and "<svg" in report
    manifest = json.loads((outcome.run_dir / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["spec"]["generators"] == ["tiny-sd"]
    assert "torch" in manifest["versions"]
    # A second run of the same spec is fully cached.
    again = Runner(RunSpec(**SPEC), tmp_path).summarize_plan()
    assert again.n_to_generate == 0 and again.n_scores_cached == again.n_scores_needed == 24


def test_cache_is_shared_across_benchmarks(tmp_path):
    run(RunSpec(**SPEC), out=tmp_path)
    spec = RunSpec(**{**SPEC, "benchmark": "scores", "generators": ["tiny-sd[guidance_scale=1.0]", "tiny-sd"]})
    plan = Runner(spec, tmp_path).summarize_plan()
    assert plan.n_unique_images == 12 and plan.n_cached_images == 12 and plan.n_to_generate == 0
    assert plan.n_scores_cached == plan.n_scores_needed
    outcome = run(spec, out=tmp_path)
    assert outcome.result.tables["scores"]["n"].tolist() == [6, 6, 6, 6]


def _count_pngs(root):
    return len(list((root / "cache" / "images").rglob("*.png")))


def test_resume_after_sigkill(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "iqabench", "run", "relgain", "--generator", "tiny-sd", "--metrics", "piqe,entropy",
           "--limit", "4", "--seeds", "0-1", "--batch-size", "1", "--out", str(out)]
    env = {**os.environ, "CI": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or _count_pngs(out) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _count_pngs(out)
    assert 5 <= partial < 16, "the run should have been killed half-way through generation"
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    store = Store(out)
    pngs = list((out / "cache" / "images").rglob("*.png"))
    assert len(pngs) == 16
    for png in pngs:
        Image.open(png).load()  # no truncated file
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert store.count_scores() == 32  # 16 images x 2 metrics, each exactly once
    # And the images are the ones an uninterrupted run makes.
    fresh = tmp_path / "fresh"
    subprocess.run(cmd[:-1] + [str(fresh)], env=env, check=True, capture_output=True, timeout=600)
    for png in pngs:
        other = fresh / png.relative_to(out)
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(other)))
    run_dirs = list((out / "runs").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "report.html").is_file()


def test_failing_image_is_reported_not_dropped(tmp_path):
    plugin = tmp_path / "flaky.py"
    plugin.write_text(textwrap.dedent('''
        from iqabench.contracts.generators import register_generator
        from iqabench.adapters.diffusers_base import DiffusersGenerator
        from iqabench.support.tiny_models import tiny_sd_pipeline

        class Flaky(DiffusersGenerator):
            def generate(self, items):
                if any("fisherman" in item.prompt for item in items):
                    raise RuntimeError("cannot draw fishermen")
                return super().generate(items)

        @register_generator("flaky-test", overwrite=True)
        def build(spec, runtime):
            return Flaky(spec, runtime, source="tiny-sd", defaults={"guidance_scale": 1.0, "steps": 4},
                         tiny_builder=tiny_sd_pipeline)
    '''))
    spec = RunSpec(**{**SPEC, "generators": ["flaky-test"], "baseline": "tiny-sd", "plugins": [str(plugin)]})
    outcome = run(spec, out=tmp_path / "out")
    assert len(outcome.failures) == 2  # prompt 1 x 2 seeds
    assert all("cannot draw fishermen" in v for v in outcome.failures.values())
    table = outcome.result.tables["relgain"]
    assert (table["n"] == 4).all() and (table["n_missing"] == 2).all()
    failures = outcome.result.tables["failures"]
    assert len(failures) == 2
    assert "cannot draw fishermen" in outcome.report.read_text("utf-8")


def test_cli_dry_run_and_weights_missing(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-hf"), "HF_HOME": str(tmp_path / "empty-hf")}
    base = [sys.executable, "-m", "iqabench", "run", "relgain", "--out", str(tmp_path / "o")]
    dry = subprocess.run(base + ["--generator", "tiny-sd", "--limit", "2", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert "4 unique images: 0 cached, 4 to generate" in dry.stderr
    assert not list((tmp_path / "o" / "cache" / "images").rglob("*.png"))
    sdxl = subprocess.run(base + ["--generator", "sdxl"], env=env, capture_output=True, text=True, timeout=300)
    assert sdxl.returncode == 2
    error_lines = [line for line in sdxl.stderr.strip().splitlines() if line.strip()]
    assert error_lines[0].startswith("error:") and "stabilityai/stable-diffusion-xl-base-1.0" in sdxl.stderr
    assert "Traceback" not in sdxl.stderr
    escape = subprocess.run(base + ["--generator", "tiny-sd", "--run-id", "../elsewhere", "--dry-run"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert escape.returncode == 2 and "'../elsewhere' is not allowed" in escape.stderr  # refused even in a dry run
    bad = subprocess.run(base + ["--generator", "tiny-sdd"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Did you mean 'tiny-sd'" in bad.stderr


def test_cli_list(tmp_path):
    out = subprocess.run([sys.executable, "-m", "iqabench", "list", "metrics"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0
    assert "piqe" in out.stdout and "no download needed" in out.stdout and "topiq_nr" in out.stdout
    gens = subprocess.run([sys.executable, "-m", "iqabench", "list", "generators"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert "tiny-sd" in gens.stdout and "sdxl" in gens.stdout
    benches = subprocess.run([sys.executable, "-m", "iqabench", "list", "benchmarks"], capture_output=True,
                             text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert "relgain" in benches.stdout


def test_combined_report_cli(tmp_path):
    a = run(RunSpec(**{**SPEC, "limit": 1}), out=tmp_path)
    b = run(RunSpec(**{**SPEC, "limit": 1, "benchmark": "scores"}), out=tmp_path)
    target = tmp_path / "both.html"
    done = subprocess.run([sys.executable, "-m", "iqabench", "report", a.run_id, b.run_id, "-o", str(target),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    html = target.read_text("utf-8")
    assert a.run_id in html and b.run_id in html
    missing = subprocess.run([sys.executable, "-m", "iqabench", "report", "nope", "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_per_item_table_lines_up_with_prompts(tmp_path):
    outcome = run(RunSpec(**{**SPEC, "limit": 2, "seeds": [3]}), out=tmp_path)
    per_item = outcome.result.tables["relgain_per_item"]
    assert isinstance(per_item, pd.DataFrame)
    assert sorted(per_item.prompt_id.unique()) == ["smoke:0", "smoke:1"] and set(per_item.seed) == {3}


def test_metric_without_weights_fails_before_any_image_is_made(tmp_path, monkeypatch):
    from pyiqa.utils import download_util

    from iqabench.metrics import MetricUnavailableError

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(MetricUnavailableError, match="topiq_nr"):
        run(RunSpec(**{**SPEC, "metrics": ["piqe", "topiq_nr"]}), out=tmp_path / "out")
    assert not list((tmp_path / "out" / "cache" / "images").rglob("*.png"))


def test_relgain_says_in_the_report_what_it_did_with_negative_and_zero_baselines(tmp_path):
    """Issue: handle f(x) near 0 or negative explicitly and say what was done in the report."""
    from iqabench.contracts.registry import METRICS
    from iqabench.metrics import register_metric

    @register_metric("negative_test", lower_better=False, overwrite=True)
    def negative(device):
        class Negative(torch.nn.Module):
            def forward(self, x):
                return -1.0 - x.mean(dim=(1, 2, 3))  # always < 0; higher (closer to 0) is better

        return Negative()

    @register_metric("zero_test", lower_better=False, overwrite=True)
    def zero(device):
        class Zero(torch.nn.Module):
            def forward(self, x):
                return x.mean(dim=(1, 2, 3)) * 0.0

        return Zero()

    try:
        outcome = run(RunSpec(**{**SPEC, "metrics": ["negative_test", "zero_test"], "limit": 1}), out=tmp_path)
    finally:
        METRICS.remove("negative_test")
        METRICS.remove("zero_test")
    table = outcome.result.tables["relgain"].set_index("metric")
    assert table.loc["negative_test", "n_negative_baseline"] == 2 and table.loc["negative_test", "n"] == 2
    assert table.loc["zero_test", "n_near_zero_excluded"] == 2 and table.loc["zero_test", "n"] == 0
    assert np.isnan(table.loc["zero_test", "relgain"])
    per_item = outcome.result.tables["relgain_per_item"]
    rows = per_item[per_item.metric == "negative_test"]
    hand = (rows.generator_score - rows.baseline_score) / rows.baseline_score.abs() * 100
    assert np.allclose(rows.relgain, hand)
    html = outcome.report.read_text("utf-8")
    assert "2 item(s) had a negative baseline score" in html
    assert "2 item(s) had a baseline score within 1e-06 of zero" in html


def test_metric_failing_on_one_image_records_it_and_a_rerun_retries_it(tmp_path):
    """Issue: a metric that fails on one image records the failure for that image and the run goes on."""
    from iqabench.contracts.registry import METRICS
    from iqabench.metrics import register_metric

    state = {"fail_above": None}

    @register_metric("picky_test", lower_better=False, overwrite=True)
    def picky(device):
        class Picky(torch.nn.Module):
            def forward(self, x):
                means = x.mean(dim=(1, 2, 3))
                if state["fail_above"] is not None and bool((means >= state["fail_above"]).any()):
                    raise RuntimeError("picky metric refuses bright images")
                return means

        return Picky()

    spec = RunSpec(**{**SPEC, "benchmark": "scores", "metrics": ["picky_test"], "limit": 2})  # 4 images, batch 2
    try:
        first = run(spec, out=tmp_path / "probe", report=False)  # learn the brightest image's mean
        state["fail_above"] = float(first.result.tables["scores_per_item"]["picky_test"].max()) - 1e-6
        failing = run(spec, out=tmp_path / "out")
        table = failing.result.tables["scores"]
        assert table["n"].tolist() == [3] and table["n_missing"].tolist() == [1]  # the others in its batch landed
        rows = Store(tmp_path / "out")._connection().execute(
            "SELECT COUNT(*) FROM scores WHERE error LIKE '%refuses bright images%'").fetchone()[0]
        assert rows == 1
        assert Runner(spec, tmp_path / "out").summarize_plan().n_scores_cached == 3
        state["fail_above"] = None  # the failure was transient: the next run retries that one image
        again = run(spec, out=tmp_path / "out", report=False)
        assert again.plan.n_scores_cached == 3
        assert again.result.tables["scores"]["n"].tolist() == [4]
        assert Store(tmp_path / "out").count_scores() == 4
    finally:
        METRICS.remove("picky_test")
