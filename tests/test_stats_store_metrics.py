import io
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from iqabench.analysis.stats import bootstrap_ci, relative_gains
from iqabench.contracts.registry import METRICS, UnknownNameError
from iqabench.metrics import build_metric, metric_fingerprint, metric_info, parse_metric_list, register_metric
from iqabench.store.store import Store, image_key, safe_child


def test_relative_gains_by_hand():
    base = np.array([10.0, 20.0, 40.0])
    method = np.array([11.0, 18.0, 50.0])
    higher = relative_gains(base, method, lower_better=False)
    assert higher.gains.tolist() == pytest.approx([10.0, -10.0, 25.0])
    lower = relative_gains(base, method, lower_better=True)
    assert lower.gains.tolist() == pytest.approx([-10.0, 10.0, -25.0])


def test_relative_gains_near_zero_and_negative_baseline():
    base = np.array([0.0, -2.0, 4.0, np.nan])
    method = np.array([1.0, -1.0, 2.0, 3.0])
    out = relative_gains(base, method, lower_better=False)
    assert out.n_near_zero == 1 and out.n_negative_base == 1
    assert np.isnan(out.gains[0]) and np.isnan(out.gains[3])
    # -2 -> -1 is an improvement for a higher-is-better metric: +50%, not -50%.
    assert out.gains[1] == pytest.approx(50.0)
    assert out.gains[2] == pytest.approx(-50.0)
    assert out.usable.tolist() == [False, True, True, False]


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(1).normal(5.0, 1.0, size=200)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.25)
    assert bootstrap_ci(values) == (low, high)
    assert all(np.isnan(bootstrap_ci(np.array([1.0]))))


def test_store_image_round_trip_and_keys(store):
    key = image_key({"model": "x"}, {"prompt": "a", "seed": 0, "params": {}})
    assert key == image_key({"model": "x"}, {"seed": 0, "prompt": "a", "params": {}})
    assert key != image_key({"model": "x"}, {"prompt": "a", "seed": 1, "params": {}})
    img = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3))
    assert not store.has_image(key)
    store.put_image(key, img)
    assert np.array_equal(np.asarray(store.load_image(key)), np.asarray(img))
    leftovers = [p for p in store.images_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_store_scores_failures_and_replace(store):
    store.put_scores([("k1", "piqe", "fp", 1.5, None), ("k2", "piqe", "fp", None, "boom")])
    assert store.get_scores(["k1", "k2", "k3"], "piqe", "fp") == {"k1": 1.5, "k2": None}
    assert store.get_score_errors(["k1", "k2"], "piqe", "fp") == {"k2": "boom"}
    store.put_scores([("k2", "piqe", "fp", 2.0, None)])
    assert store.get_scores(["k2"], "piqe", "fp") == {"k2": 2.0}
    assert store.get_scores(["k1"], "piqe", "other-fp") == {}
    assert store.count_scores() == 2


def test_generation_failure_is_stale_once_the_image_exists(store):
    """Killed between the PNG rename and the failure-row delete in put_image: the image wins."""
    from iqabench.store.atomic_io import atomic_write_bytes

    key, other = "ab" * 32, "cd" * 32
    store.record_failure(key, "generate", "RuntimeError: transient")
    store.record_failure(other, "generate", "RuntimeError: still failing")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    atomic_write_bytes(store.image_path(key), buffer.getvalue())  # the rename landed, the DELETE did not
    assert store.failures() == {other: "generate: RuntimeError: still failing"}
    assert store.failures([key]) == {}


def _write_scores(root, worker):
    s = Store(root)
    for i in range(50):
        s.put_scores([(f"k{i}", "m", "fp", float(worker), None)])
    s.close()


def test_store_many_processes_write_at_once(tmp_path):
    Store(tmp_path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_scores, args=(tmp_path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert Store(tmp_path).count_scores() == 50


def test_run_names_cannot_escape(store):
    for bad in ["../x", "a/b", "..", "/etc", ""]:
        with pytest.raises(ValueError):
            store.run_dir(bad)
    assert safe_child(store.runs_dir, "ok-run_1.2").parent == store.runs_dir


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_a_missing_gpu_is_one_sentence_not_a_driver_traceback():
    from iqabench.execution.runtime import Runtime

    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="torch sees no CUDA GPU here; use --device cpu"):
            Runtime(device=device)


def test_pyiqa_metadata():
    piqe = metric_info("piqe")
    assert piqe.mode == "NR" and piqe.lower_better and not piqe.differentiable
    assert metric_info("psnr").mode == "FR" and not metric_info("psnr").lower_better
    assert metric_info("topiq_nr").differentiable
    assert "pyiqa NR, lower is better" in METRICS.get("piqe").description


def test_piqe_and_entropy_score_batches_like_pyiqa():
    import pyiqa

    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for name in ["piqe", "entropy"]:
        ours = build_metric(name).score(images)
        plain = pyiqa.create_metric(name, device="cpu")
        reference = torch.stack([plain(images[i : i + 1]).reshape(()) for i in range(3)])
        assert ours.shape == (3,)
        assert torch.allclose(ours, reference.float(), atol=1e-4)


def test_missing_weights_metric_fails_in_one_sentence(monkeypatch, tmp_path):
    from pyiqa.utils import download_util

    from iqabench import metrics as m

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path))
    with pytest.raises(m.MetricUnavailableError) as info:
        build_metric("topiq_nr")
    text = str(info.value)
    assert "topiq_nr" in text and "cfanet_nr_koniq_res50" in text and str(tmp_path) in text
    assert "\n" not in text


def test_user_metric_registration_in_a_few_lines():
    @register_metric("mean_brightness_test", lower_better=False, differentiable=True, version="1")
    def build(device):
        class Brightness(nn.Module):
            def forward(self, x):
                return x.mean(dim=(1, 2, 3))

        return Brightness()

    try:
        metric = build_metric("mean_brightness_test")
        images = torch.stack([torch.full((3, 8, 8), 0.25), torch.full((3, 8, 8), 0.75)])
        assert metric.score(images).tolist() == pytest.approx([0.25, 0.75])
        x = images.clone().requires_grad_(True)
        metric.loss(x).sum().backward()  # loss = -score for higher-is-better
        assert torch.allclose(x.grad, torch.full_like(x, -1.0 / (3 * 8 * 8)))
        assert parse_metric_list("piqe, mean_brightness_test") == ["piqe", "mean_brightness_test"]
        assert metric_fingerprint("mean_brightness_test") == metric.fingerprint()
    finally:
        METRICS.remove("mean_brightness_test")


def test_user_metric_must_return_a_module():
    @register_metric("not_a_module_test", lower_better=True)
    def build(device):
        return lambda x: x

    try:
        with pytest.raises(TypeError, match="must return an nn.Module"):
            build_metric("not_a_module_test")
    finally:
        METRICS.remove("not_a_module_test")


def test_unknown_metric_in_list():
    with pytest.raises(UnknownNameError, match="Did you mean 'entropy'"):
        parse_metric_list("piqe,entropi")


def test_paired_statistics_by_hand():
    from scipy import stats as sps

    from iqabench.analysis.stats import paired_statistics

    base = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    method = np.array([1.5, 2.0, 3.5, 3.0, 9.0])
    out = paired_statistics(base, method, lower_better=False)
    diff = np.array([0.5, 0.0, 0.5, -1.0])
    assert out["n_pairs"] == 4
    assert out["improvement"] == pytest.approx(diff.mean())
    assert out["improvement_std"] == pytest.approx(diff.std(ddof=1))
    assert out["win_rate"] == pytest.approx((2 + 0.5) / 4)
    reference = sps.ttest_rel(method[:4], base[:4])
    assert out["t_statistic"] == pytest.approx(reference.statistic)
    assert out["p_value"] == pytest.approx(reference.pvalue)
    lower = paired_statistics(base, method, lower_better=True)
    assert lower["improvement"] == pytest.approx(-diff.mean())
    assert lower["t_statistic"] == pytest.approx(-reference.statistic)
    assert lower["win_rate"] == pytest.approx((1 + 0.5) / 4)


def test_sweep_removes_only_dead_writers_temp_files(store):
    from iqabench.store.atomic_io import _HOST

    folder = store.images_dir / "ab"
    folder.mkdir(parents=True)
    dead = folder / f".x.png.{_HOST}.999999999.0123abcd.tmp"
    alive = folder / f".y.png.{_HOST}.{os.getpid()}.0123abcd.tmp"
    other_host = folder / ".z.png.ffffffff.999999999.0123abcd.tmp"
    for path in (dead, alive, other_host):
        path.write_bytes(b"half")
    assert store.sweep_temp_files() == 1
    assert not dead.exists() and alive.exists() and other_host.exists()
