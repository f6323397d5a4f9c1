"""Issue 15, run-level probes on the tiny models (1 step, 1 prompt): damaged cache, broken generators and
metrics, the completeness that decides the exit code, and a database deleted mid-run."""

import textwrap

import pytest
import torch
from PIL import Image

from iqabench.api import run
from iqabench.benchmark import UnknownOptionError
from iqabench.contracts.registry import METRICS
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner
from iqabench.metrics import MetricContractError, MetricUnavailableError, metric_fingerprint, register_metric
from iqabench.store.store import Store, StoreError

SPEC = dict(benchmark="scores", generators=["tiny-sd[steps=1]"], metrics=["entropy"], prompts="smoke", limit=1,
            seeds=[0], batch_size=2)

# A generator plugin whose UNet weights are NaN (a broken checkpoint), and one that returns black images.
BROKEN_GENERATORS = textwrap.dedent('''
    import torch
    from PIL import Image
    from iqabench.contracts.generators import register_generator
    from iqabench.adapters.diffusers_base import DiffusersGenerator
    from iqabench.support.tiny_models import tiny_sd_pipeline

    def nan_pipeline(seed=0):
        pipe = tiny_sd_pipeline(seed)
        with torch.no_grad():
            for p in pipe.unet.parameters():
                p.fill_(float("nan"))
        return pipe

    class Black(DiffusersGenerator):
        def generate(self, items):
            return [Image.new("RGB", (64, 64)) for _ in items]

    @register_generator("nan-sd-test", overwrite=True)
    def build_nan(spec, runtime):
        return DiffusersGenerator(spec, runtime, source="tiny-sd", defaults={"steps": 1}, tiny_builder=nan_pipeline)

    @register_generator("black-sd-test", overwrite=True)
    def build_black(spec, runtime):
        return Black(spec, runtime, source="tiny-sd", defaults={"steps": 1}, tiny_builder=tiny_sd_pipeline)
''')


@pytest.fixture(scope="module")
def broken_plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "broken_generators.py"
    path.write_text(BROKEN_GENERATORS)
    return str(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete run (1 image, entropy) shared by the tests that only read or damage a copy of it."""
    root = tmp_path_factory.mktemp("finished")
    outcome = run(RunSpec(**SPEC), out=root)
    assert outcome.complete
    return root, outcome


def _copy_store(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return Store(dst)


def _only_key(store):
    return next(store.images_dir.glob("*/*.png")).stem


def test_complete_run_is_complete(finished):
    _, outcome = finished
    assert outcome.complete and outcome.missing_images == 0 and outcome.missing_scores == {"entropy": 0}
    assert outcome.n_images == 1 and outcome.n_scores == 1


@pytest.mark.parametrize("damage", ["truncated", "same-size garbage"])
def test_damaged_cached_png_is_moved_aside_logged_once_and_regenerated(finished, tmp_path, damage):
    store = _copy_store(finished[0], tmp_path / "s")
    key = _only_key(store)
    original = Image.open(store.image_path(key)).convert("RGB").tobytes()
    good = store.image_path(key).read_bytes()
    store.image_path(key).write_bytes(good[: len(good) // 2] if damage == "truncated" else bytes(len(good)))
    if damage == "same-size garbage":  # the size record matches: caught when scoring decodes it
        store.delete_scores([key])
    logs = []
    outcome = run(RunSpec(**SPEC), out=tmp_path / "s", log=logs.append, report=False)
    assert outcome.complete
    moved = [m for m in logs if "moved to" in m]
    assert len(moved) == 1 and "smoke:0 seed 0" in moved[0] and "regenerating it" in moved[0]
    assert Image.open(store.image_path(key)).convert("RGB").tobytes() == original  # same pixels again
    assert len(list(store.quarantine_dir.glob("*.png"))) == 1  # the damaged bytes are kept, not deleted


def test_report_renders_a_placeholder_for_a_damaged_image(finished, tmp_path):
    from iqabench.reports import render_report

    store = _copy_store(finished[0], tmp_path / "s")
    key = _only_key(store)
    store.image_path(key).write_bytes(bytes(store.image_path(key).stat().st_size))
    html = render_report(store, [finished[1].run_id]).read_text("utf-8")
    assert "cached image is damaged" in html and "store verify --repair" in html


@pytest.mark.parametrize("generator, reason", [
    ("nan-sd-test", "produced non-finite latents (NaN or inf) for smoke:0"),
    ("black-sd-test", "the generated image is constant (every pixel is (0, 0, 0))"),
])
def test_broken_generator_output_is_a_failure_not_a_cached_image(tmp_path, broken_plugin, generator, reason):
    spec = RunSpec(**{**SPEC, "generators": [generator], "plugins": [broken_plugin]})
    outcome = run(spec, out=tmp_path, report=False)
    assert not outcome.complete and outcome.missing_images == 1 and outcome.missing_scores == {"entropy": 1}
    assert [reason in v for v in outcome.failures.values()] == [True]
    assert list(Store(tmp_path).images_dir.glob("*/*.png")) == []  # nothing cached
    assert "1 of 1 image(s) failed to generate" in outcome.incomplete_summary()
    assert "Re-run the same command" in outcome.incomplete_summary()


def _register(name, forward=None, factory_error=None):
    @register_metric(name, lower_better=False, overwrite=True)
    def build(device):
        if factory_error is not None:
            raise factory_error

        class M(torch.nn.Module):
            def forward(self, x):
                return forward(x)

        return M()


def test_metric_with_the_wrong_shape_fails_the_run_before_any_score_is_stored(finished, tmp_path):
    _register("three_numbers_test", lambda x: x.mean(dim=(2, 3)))
    try:
        _copy_store(finished[0], tmp_path / "s")
        with pytest.raises(MetricContractError, match=r"metric 'three_numbers_test' returned shape \[1, 3\]"):
            run(RunSpec(**{**SPEC, "metrics": ["three_numbers_test"]}), out=tmp_path / "s", report=False)
        rows = Store(tmp_path / "s")._connection().execute(
            "SELECT COUNT(*) FROM scores WHERE metric = 'three_numbers_test'").fetchone()[0]
        assert rows == 0
    finally:
        METRICS.remove("three_numbers_test")


def test_metric_factory_raising_fails_before_any_image_is_made(tmp_path):
    _register("broken_factory_test", factory_error=RuntimeError("cannot open the model file"))
    try:
        with pytest.raises(MetricUnavailableError, match=r"metric 'broken_factory_test' could not be built: its "
                                                         r"factory raised RuntimeError: cannot open the model file"):
            run(RunSpec(**{**SPEC, "metrics": ["broken_factory_test"]}), out=tmp_path, report=False)
        assert list(Store(tmp_path).images_dir.glob("*/*.png")) == []
    finally:
        METRICS.remove("broken_factory_test")


def test_database_deleted_mid_run_is_noticed(finished, tmp_path):
    store_dir = tmp_path / "s"
    _copy_store(finished[0], store_dir)

    def delete_then_score(x):
        (store_dir / "cache" / "scores.sqlite").unlink(missing_ok=True)
        return x.mean(dim=(1, 2, 3))

    _register("deleting_test", delete_then_score)
    try:
        with pytest.raises(StoreError, match="was deleted or replaced while this run was using it; scores written "
                                             "since then are not in the store: re-run the same command"):
            run(RunSpec(**{**SPEC, "metrics": ["deleting_test"]}), out=store_dir, report=False)
    finally:
        METRICS.remove("deleting_test")
    again = run(RunSpec(**SPEC), out=store_dir, report=False)  # a re-run recreates the database and recomputes
    assert again.complete and again.plan.n_cached_images == 1


def test_unknown_option_is_refused_with_close_matches(tmp_path):
    spec = RunSpec(**{**SPEC, "benchmark": "scale-sweep", "options": {"scale": "0.5,1"}})
    with pytest.raises(UnknownOptionError, match=r"benchmark 'scale-sweep' has no option 'scale'. Did you mean "
                                                 r"'scales'\? Its options: scale_targets, scales; every "
                                                 r"benchmark also accepts the core options: .*prompt_column"):
        Runner(spec, tmp_path)


def test_unknown_option_of_a_benchmark_without_options_lists_the_core_options(tmp_path):
    """relgain declares no options of its own; the message must not say 'none' while core options are accepted."""
    from iqabench.benchmark import CORE_OPTIONS

    spec = RunSpec(**{**SPEC, "benchmark": "relgain", "options": {"scale": "0.5,1"}})
    with pytest.raises(UnknownOptionError) as info:
        Runner(spec, tmp_path)
    message = str(info.value)
    assert "benchmark 'relgain' has no option 'scale'." in message and "none" not in message
    assert "It has no options of its own; every benchmark accepts the core options: " in message
    assert all(name in message for name in CORE_OPTIONS)


def test_non_finite_score_stays_an_error_row_and_the_run_is_incomplete(finished, tmp_path):
    _register("nan_score_test", lambda x: torch.full((x.shape[0],), float("nan")))
    try:
        _copy_store(finished[0], tmp_path / "s")
        outcome = run(RunSpec(**{**SPEC, "metrics": ["nan_score_test"]}), out=tmp_path / "s", report=False)
        store = Store(tmp_path / "s")
        errors = store.get_score_errors([_only_key(store)], "nan_score_test", metric_fingerprint("nan_score_test"))
        assert list(errors.values()) == ["non-finite score"]
        assert not outcome.complete and outcome.missing_scores == {"nan_score_test": 1}
    finally:
        METRICS.remove("nan_score_test")


def test_same_size_garbage_with_scores_cached_is_quarantined_and_regenerated(finished, tmp_path, capsys):
    """Its scores are cached, so scoring never decodes it: the reuse check itself (PIL verify: PNG structure and
    chunk CRCs) must catch it, quarantine it and regenerate it; the rerun then exits 0, complete."""
    from iqabench.cli import main

    store = _copy_store(finished[0], tmp_path / "s")
    key = _only_key(store)
    original = Image.open(store.image_path(key)).convert("RGB").tobytes()
    good = store.image_path(key).read_bytes()
    store.image_path(key).write_bytes(bytes(len(good)))  # same byte size as the record
    metric_fp = metric_fingerprint("entropy")
    assert store.get_scores([key], "entropy", metric_fp)[key] is not None  # the scores are still cached
    with pytest.raises(SystemExit) as info:
        main(["run", "scores", "-g", "tiny-sd[steps=1]", "--metrics", "entropy", "--prompts", "smoke",
              "--limit", "1", "--seeds", "0", "--batch-size", "2", "--out", str(tmp_path / "s")])
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code in (0, None), err
    assert "moved to" in err and "regenerating it" in err
    assert len(list(store.quarantine_dir.glob("*.png"))) == 1
    assert store.image_path(key).read_bytes() != bytes(len(good))
    assert Image.open(store.image_path(key)).convert("RGB").tobytes() == original  # regenerated, same pixels
    assert store.check_image(key) is None
    assert store.get_scores([key], "entropy", metric_fp)[key] is not None  # rescored after regeneration
