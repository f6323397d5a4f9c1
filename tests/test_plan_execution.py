"""Issue 22, items 1, 2 and 5: planning without side effects, *what* (RunSpec) apart from *how* (Execution),
the batch policy reaching benchmarks' own passes, and errors classified by type at the one CLI boundary."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from iqabench.api import run
from iqabench.contracts.execution import Execution
from iqabench.contracts.specs import RunSpec
from iqabench.engine.manifest import default_run_id
from iqabench.engine.planning import plan_run
from iqabench.execution.runtime import Runtime
from iqabench.store.store import content_key

SPEC = dict(benchmark="relgain", generators=["tiny-sd[steps=1]"], metrics=["entropy"], limit=1)


# -- run ids ------------------------------------------------------------------------------------------------------
def test_speed_flags_and_batch_size_do_not_change_the_run_id():
    spec = RunSpec(**SPEC)
    plain = default_run_id(spec, Execution())
    for how in (Execution(batch_size=16), Execution(batch_size="auto"), Execution(compile=True),
                Execution(channels_last=True, fuse_qkv=True, sdpa_backend="math", attention_slicing=True),
                Execution(num_processes=4)):
        assert default_run_id(spec, how) == plain, how
    assert default_run_id(spec, Execution(device="cpu")) != plain  # the device is part of it
    assert default_run_id(RunSpec(**SPEC, dtype="fp16"), Execution()) != plain  # the dtype is part of the spec


def test_the_out_of_memory_hint_resumes_the_same_run():
    """The back-off says "pass --batch-size N next time": following it must not start a new run folder."""
    spec = RunSpec(**SPEC)
    assert default_run_id(spec, Execution(batch_size=8)) == default_run_id(spec, Execution(batch_size=4))


def test_existing_run_ids_are_unchanged():
    """Before the split the id hashed RunSpec.to_dict() with device and batch_size in it; specs made without speed
    flags (and the default batch size) keep their ids, through the new API and the old spelling alike."""
    spec = RunSpec(**SPEC)
    legacy = {"benchmark": "relgain", "generators": ["tiny-sd[steps=1]"], "metrics": ["entropy"], "prompts": "smoke",
              "seeds": [0], "limit": 1, "baseline": None, "options": {}, "device": "auto", "dtype": "auto",
              "batch_size": 4, "plugins": []}
    expected = f"relgain-{content_key('run/v1', legacy)[:10]}"
    assert default_run_id(spec) == default_run_id(spec, Execution()) == expected == "relgain-da518ec699"
    on_cpu = {**legacy, "device": "cpu"}
    old_spelling = RunSpec(**SPEC, device="cpu", batch_size=4)
    assert default_run_id(old_spelling) == f"relgain-{content_key('run/v1', on_cpu)[:10]}"


def test_old_spellings_land_in_the_execution_not_the_spec():
    spec = RunSpec(**SPEC, device="cpu", batch_size=2, options={"compile": True, "auto_batch_size": True})
    assert "device" not in spec.to_dict() and "batch_size" not in spec.to_dict() and spec.options == {}
    assert spec.execution_hint() == Execution(device="cpu", batch_size="auto", compile=True)
    assert RunSpec.from_dict({**spec.to_dict(), "device": "cpu", "batch_size": 8}).execution_hint().batch_size == 8
    # dataclasses.replace (seed_consistency uses it) reads the init-only fields back: the hint survives it
    plain = RunSpec(**SPEC, device="cpu", batch_size=2)
    assert dataclasses.replace(plain, limit=2).execution_hint() == Execution(device="cpu", batch_size=2)


def test_runtime_is_immutable():
    runtime = Runtime("cpu", "fp32", 3)
    with pytest.raises(AttributeError):
        runtime.device = "cuda"  # type: ignore[misc]
    assert runtime.batch_size == 3 and runtime.batch.back_off() == 1 and runtime.batch_size == 1


# -- planning -----------------------------------------------------------------------------------------------------
def test_plan_run_has_no_side_effects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_run(RunSpec(**SPEC), Runtime("cpu", "fp32"))
    assert list(tmp_path.iterdir()) == []  # no store, no run folder, nothing written
    assert {p.generator for p in plan.plan} == {"tiny-sd[steps=1]", "tiny-sd[guidance_scale=1.0,steps=1]"}
    assert len(set(plan.image_keys)) == 2 and set(plan.metric_fps) == {"entropy"}


def test_study_export_of_a_run_planned_on_another_device_keeps_its_rows(tmp_path, monkeypatch):
    """run.json records the resolved runtime and the planned keys; the export reads them and re-plans nothing,
    so a run planned on cuda/fp16 exports on this CPU machine, and no metric (or its weights) is needed."""
    import iqabench.engine.planning as planning
    import iqabench.metrics.registration as registration
    from iqabench.benchmarks.study.export import collect_conditions
    from iqabench.store.store import Store

    outcome = run(RunSpec(**SPEC), out=tmp_path, execution=Execution(device="cpu", batch_size=2))
    store = Store(tmp_path)
    data = store.read_run_json(outcome.run_id)
    assert data["runtime"] == {"device": "cpu", "device_type": "cpu", "dtype": "fp32"}
    assert [r["image_key"] for r in data["planned"]] == outcome_keys(store, outcome.run_id)
    assert data["execution"]["batch_size"] == 2 and "batch_size" not in data["spec"]
    # as if planned on a GPU: another resolved dtype, which would give other keys if the export re-planned here
    data["runtime"] = {"device": "cuda", "device_type": "cuda", "dtype": "fp16"}
    data["spec"]["dtype"] = "fp16"
    data["environment"].update(device="cuda", dtype="fp16")
    (tmp_path / "runs" / outcome.run_id / "run.json").write_text(json.dumps(data))

    def refuse(*_, **__):
        raise AssertionError("the export must not plan or look at metrics")

    monkeypatch.setattr(planning, "plan_run", refuse)
    monkeypatch.setattr(registration, "check_available", refuse)
    monkeypatch.setattr(registration, "metric_fingerprint", refuse)
    rows = collect_conditions(store, [outcome.run_id])
    assert len(rows) == 2 and set(rows.condition) == {"tiny-sd[steps=1]", "tiny-sd[guidance_scale=1.0,steps=1]"}


def outcome_keys(store, run_id):
    from iqabench.engine.runner import Runner

    return Runner(RunSpec(**SPEC), store, run_id=run_id, execution=Execution(device="cpu")).image_keys


# -- the batch policy ---------------------------------------------------------------------------------------------
def test_batch_size_auto_reaches_fid_topk_inception_pass(tmp_path, monkeypatch):
    """``--batch-size auto`` used to become batch 1 plus a flag, and fid-topk's Inception pass ran one image per
    batch; the pass now takes the run's batch policy."""
    from test_fid_topk import _reference

    from iqabench.benchmarks.fid_topk.features import InceptionFeatures

    sizes: list[int] = []
    original = InceptionFeatures._extract

    def record(self, images):
        sizes.append(len(images))
        return original(self, images)

    monkeypatch.setattr(InceptionFeatures, "_extract", record)
    folder = _reference(tmp_path, 4)
    options = {"reference": str(folder / "pairs.csv"), "weights": "random", "topk": "50", "kid_subsets": 10,
               "allow_small_topk": True}
    spec = RunSpec("fid-topk", ["tiny-sd[steps=1]"], metrics=["entropy"], options=options)
    outcome = run(spec, out=tmp_path / "store", execution=Execution(device="cpu", batch_size="auto"), report=False)
    assert outcome.result.summary["features_extracted"] == 8
    assert sum(sizes) == 8 and max(sizes) > 1, sizes


def test_a_pass_backs_off_on_out_of_memory():
    from iqabench.execution.batching import BatchPolicy, run_batched

    policy = BatchPolicy("auto")
    calls: list[int] = []

    def call(chunk):
        calls.append(len(chunk))
        if len(chunk) > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return [x * 2 for x in chunk]

    assert run_batched(list(range(10)), call, policy) == [x * 2 for x in range(10)]
    assert calls[:3] == [10, 5, 2] and policy.for_pass() == 2  # 16 -> 10 items, then halved until it fits


# -- errors by type -----------------------------------------------------------------------------------------------
def _cli(args, capsys):
    from iqabench.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


def test_a_key_error_in_a_plugin_benchmark_is_a_bug_with_its_traceback(tmp_path, capsys):
    plugin = tmp_path / "keyerror_bench.py"
    plugin.write_text(textwrap.dedent('''
        from iqabench.benchmark import BaseBenchmark, register_benchmark

        @register_benchmark("keyerror-test", overwrite=True)
        class KeyErrorBench(BaseBenchmark):
            options = {}

            def plan(self, spec, generators):
                from iqabench.benchmark import PlannedItem
                return [PlannedItem(g, item) for g in spec.generators for item in self.work_items(spec)]

            def analyze(self, ctx):
                return {}["relgain_per_item"]  # a bug planted in the analysis
    '''))
    code, err = _cli(["run", "keyerror-test", "-g", "tiny-sd[steps=1]", "--metrics", "entropy", "--limit", "1",
                      "--plugin", plugin, "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 1 and "Traceback" in err and "KeyError: 'relgain_per_item'" in err
    assert "this is a bug in iqabench, please report it" in err


def test_a_key_error_in_iqabenchs_own_benchmark_code_is_a_bug_with_its_traceback(tmp_path, capsys, monkeypatch):
    """The same rule for a KeyError whose innermost Python frame is iqabench's own code (relgain's analysis): the old
    rule classified by that frame and printed it as the user's one-sentence mistake (exit 2)."""
    import iqabench.benchmarks.relgain as relgain

    monkeypatch.setattr(relgain, "metric_info", {}.__getitem__)  # relgain's own `metric_info(m)` line raises
    code, err = _cli(["run", "relgain", "-g", "tiny-sd[steps=1]", "--metrics", "entropy", "--limit", "1",
                      "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 1 and "Traceback" in err and "KeyError: 'entropy'" in err, err
    assert 'benchmarks/relgain.py", line' in err  # raised from iqabench's code, not from a plugin file
    assert "this is a bug in iqabench, please report it" in err


def test_a_user_mistake_is_still_one_sentence(tmp_path, capsys):
    code, err = _cli(["run", "relgain", "-g", "tiny-sd", "--seeds", "3-1", "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and "Traceback" not in err and "bug" not in err
    assert " ".join(err.split()) == "error: seed range '3-1' runs backwards"
    code, err = _cli(["run", "relgain", "-g", "tiny-sd", "--batch-size", "0", "--out", tmp_path, "--dry-run"], capsys)
    assert code == 2 and "--batch-size must be a whole number of at least 1" in err and "Traceback" not in err


def test_auto_scores_cached_images_in_batches_not_one_by_one():
    from iqabench.execution.batching import AUTO_PASS_START, BatchPolicy

    auto = BatchPolicy("auto")
    assert auto.size == 1 and auto.for_scoring() == AUTO_PASS_START  # nothing probed: not one image per batch
    auto.set(32)
    assert auto.for_scoring() == 32
    assert BatchPolicy(3).for_scoring() == 3


def test_scoring_backs_off_through_the_batch_policy_on_out_of_memory():
    """A metric that runs out of memory above 2 images, batch 16: the scorer halves through the policy (16, 8, 4,
    then 2s) instead of going one by one, and the next batch starts at the backed-off size. A non-OOM error still
    splits one by one and leaves the policy alone."""
    from types import SimpleNamespace

    import torch

    from iqabench.engine.scoring import TensorScorer
    from iqabench.execution.runtime import Runtime

    calls: list[int] = []

    def score(batch, prompts=None):
        calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.ones(len(batch))

    metric = SimpleNamespace(name="m", info=SimpleNamespace(prompt_aware=False), score=score)
    runtime = Runtime("cpu", "fp32", 16)
    scorer = TensorScorer(None, runtime, {"m": "fp"}, metrics={"m": metric})
    images = torch.zeros(16, 3, 4, 4, dtype=torch.uint8)
    keys = [f"k{i}" for i in range(16)]
    rows = scorer.score(keys, images, {k: ["m"] for k in keys}, write=False)
    assert [r[3] for r in rows] == [1.0] * 16 and [r[0] for r in rows] == keys  # every image scored, in order
    assert calls == [16, 8, 4] + [2] * 8
    assert runtime.batch.for_scoring() == 2
    calls.clear()
    scorer.score(keys, images, {k: ["m"] for k in keys}, write=False)
    assert calls == [2] * 8  # the next batch starts at the backed-off size

    def broken(batch, prompts=None):
        calls.append(len(batch))
        if len(batch) > 1:
            raise ValueError("shape mismatch")
        return torch.ones(1)

    calls.clear()
    fixed = Runtime("cpu", "fp32", 4)
    scorer = TensorScorer(None, fixed, {"m": "fp"}, metrics={"m": SimpleNamespace(
        name="m", info=SimpleNamespace(prompt_aware=False), score=broken)})
    rows = scorer.score(keys[:4], images[:4], {k: ["m"] for k in keys[:4]}, write=False)
    assert calls == [4, 1, 1, 1, 1] and fixed.batch.for_scoring() == 4 and len(rows) == 4


def test_every_analysis_code_module_resolves_and_a_missing_one_fails_loudly(monkeypatch):
    """The analysis cache's digest reads these modules by name; a name left behind by a move used to drop out of the
    digest silently (a changed analysis could then reuse a stale result)."""
    import importlib.util
    from pathlib import Path

    import iqabench.engine.runner as runner
    from iqabench.benchmarks.relgain import RelGain

    for name in runner.ANALYSIS_CODE_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin and Path(spec.origin).is_file(), name
    assert len(runner._analysis_code_digest(RelGain(), {})) == 64
    monkeypatch.setattr(runner, "ANALYSIS_CODE_MODULES", (*runner.ANALYSIS_CODE_MODULES, "iqabench.stats"))
    with pytest.raises(RuntimeError, match="'iqabench.stats', which is not a module file"):
        runner._analysis_code_digest(RelGain(), {})
