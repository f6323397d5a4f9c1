"""fr-distances: distance conventions, symmetric zero-diagonal matrices, pair caching, panel fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_iqa_adapter_generator import tiny_checkpoint

from iqabench.api import run
from iqabench.benchmarks.fr_distances import distance_matrix, distance_transform, fr_panel, pair_scores, to_distance
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import MetricUnavailableError, build_metric
from iqabench.store.store import content_key


def _images(store, n=3, size=48):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3))
    keys = []
    for i in range(n):  # increasingly noisy versions of one image
        noisy = np.clip(base + rng.normal(0, 25 * i, base.shape), 0, 255).astype(np.uint8)
        key = content_key("test-image", i)
        store.put_image(key, Image.fromarray(noisy))
        keys.append(key)
    return keys


def _matrix(store, metric, keys):
    values = pair_scores(store, metric, [(a, b) for a in keys for b in keys])
    transform = distance_transform(metric.name)
    rows = [{"condition_a": f"c{i}", "condition_b": f"c{j}",
             "distance": float(to_distance(np.array([values[(a, b)]]), transform)[0])}
            for i, a in enumerate(keys) for j, b in enumerate(keys)]
    return distance_matrix(pd.DataFrame(rows), [f"c{i}" for i in range(len(keys))])


def test_distance_conventions():
    assert distance_transform("ssim") == "1 - value"
    assert distance_transform("gmsd") == "value" and distance_transform("lpips") == "value"
    assert distance_transform("psnr") == "similarity"
    assert to_distance(np.array([1.0, 0.25]), "1 - value").tolist() == [0.0, 0.75]


@pytest.mark.parametrize("name", ["ssim", "gmsd"])
def test_matrix_is_symmetric_with_zero_diagonal_for_symmetric_metrics(store, name):
    keys = _images(store)
    matrix = _matrix(store, build_metric(name), keys).to_numpy()
    assert matrix.shape == (3, 3)
    assert np.allclose(np.diag(matrix), 0.0, atol=1e-5)
    assert np.allclose(matrix, matrix.T, atol=1e-5)
    assert matrix[0, 2] > matrix[0, 1] > 0.01  # more noise, farther away


def test_pairs_are_cached_under_the_metric_fingerprint(store):
    keys = _images(store, n=2)
    metric = build_metric("ssim")
    calls = []
    original = metric.score
    metric.score = lambda images, refs=None: calls.append(len(images)) or original(images, refs)
    first = pair_scores(store, metric, [(keys[0], keys[1]), (keys[1], keys[0])])
    assert sum(calls) == 2
    again = pair_scores(store, metric, [(keys[1], keys[0]), (keys[0], keys[1]), (keys[0], keys[0])])
    assert sum(calls) == 3  # only the new (a, a) pair was computed
    assert again[(keys[0], keys[1])] == first[(keys[0], keys[1])]
    assert again[(keys[0], keys[0])] == pytest.approx(1.0, abs=1e-5)


def test_include_baseline_flag_spellings():
    from iqabench.benchmarks.fr_distances import option_flag

    assert [option_flag(v, "include_baseline") for v in (True, False, 0, "False", "no", "off", "Yes", "1")] == \
        [True, False, False, False, False, False, True, True]
    with pytest.raises(ValueError, match="not a yes/no value"):
        option_flag("maybe", "include_baseline")


def test_panel_rules():
    assert fr_panel(RunSpec("fr-distances", ["x"], metrics=["ssim", "psnr"])) == (["ssim", "psnr"], True)
    assert fr_panel(RunSpec("fr-distances", ["x"]))[0] == ["ssim", "lpips", "dists", "pieapp"]
    with pytest.raises(ValueError, match="piqe is no-reference"):
        fr_panel(RunSpec("fr-distances", ["x"], metrics=["ssim", "piqe"]))


def test_offline_run_default_panel_falls_back_with_a_note(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    spec = RunSpec("fr-distances", [f"iqa-adapter:{checkpoint}[steps=2]"], limit=1, seeds=[0, 1], batch_size=4,
                   options={"targets": "1,99"})
    outcome = run(spec, out=tmp_path / "out")
    result = outcome.result
    assert result.summary["metrics_used"] == ["ssim"]
    notes = " ".join(result.notes)
    assert "Metrics used: ssim" in notes and "lpips left out of the default panel" in notes
    table = result.tables["fr_matrix"]
    matrix = table.pivot(index="image", columns="reference", values="mean_distance")
    assert list(matrix.index) == ["baseline", "p1", "p99"] == sorted(matrix.columns)
    assert np.allclose(np.diag(matrix.to_numpy()), 0.0, atol=1e-5)
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T, atol=1e-5)
    pairs = result.tables["fr_pairs"]
    one = pairs[(pairs.condition_a == "p1") & (pairs.condition_b == "p99")].distance
    assert matrix.loc["p1", "p99"] == pytest.approx(one.mean()) and len(one) == 2  # mean over the 2 seeds
    assert "fr_matrix_ssim" in result.figures
    with pytest.raises(MetricUnavailableError, match="lpips"):
        run(RunSpec(**{**spec.to_dict(), "metrics": ["lpips"]}), out=tmp_path / "out")


def test_batch_size_auto_pair_pass_backs_off_on_out_of_memory(tmp_path, monkeypatch):
    """The FR pair pass takes the run's batch policy: with ``--batch-size auto`` it starts at the pass size, and
    an accelerator out-of-memory error halves the chunk and retries the same pairs, so every pair is scored."""
    from iqabench.contracts.execution import Execution
    from iqabench.metrics.wrapper import Metric

    attempts: list[int] = []
    original = Metric.score

    def small_memory(self, images, refs=None, **kwargs):
        attempts.append(len(images))
        if len(images) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, images, refs, **kwargs)

    monkeypatch.setattr(Metric, "score", small_memory)
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    spec = RunSpec("fr-distances", [f"iqa-adapter:{checkpoint}[steps=1]"], metrics=["ssim"], limit=1, seeds=[0],
                   options={"targets": "1,99"})
    result = run(spec, out=tmp_path / "out", execution=Execution(device="cpu", batch_size="auto")).result
    pairs = result.tables["fr_pairs"]
    assert len(pairs) == 9 and pairs.distance.notna().all()  # 3 x 3 ordered pairs of one (prompt, seed)
    assert not any("could not be computed" in note for note in result.notes)
    assert attempts[:3] == [9, 4, 2] and max(attempts[3:]) == 2  # auto starts at 16 (9 pairs), halved until it fits
    assert sum(a for a in attempts if a <= 2) == 9  # each pair computed once, none dropped


def test_a_non_memory_error_in_one_chunk_is_recorded_per_pair_while_others_back_off(store):
    from iqabench.execution.batching import BatchPolicy

    keys = _images(store, n=3)
    metric = build_metric("ssim")
    original = metric.score
    attempts: list[int] = []

    def flaky(images, refs=None):
        attempts.append(len(images))
        if len(images) > 2:
            raise RuntimeError("CUDA out of memory.")
        if len(attempts) == 3:  # the first chunk that fits: a genuine bug in the metric
            raise ValueError("broken chunk")
        return original(images, refs)

    metric.score = flaky
    pairs = [(a, b) for a in keys for b in keys]
    values = pair_scores(store, metric, pairs, policy=BatchPolicy("auto"))
    failed = [p for p, v in values.items() if v is None]
    assert len(values) == 9 and len(failed) == 2 and attempts[:3] == [9, 4, 2]
    errors = store.get_score_errors([content_key("fr-pair/v1", *p) for p in failed], "ssim", metric.fingerprint())
    assert all("ValueError: broken chunk" in e for e in errors.values()) and len(errors) == 2


def test_pairs_are_decoded_chunk_by_chunk_not_all_up_front(store, monkeypatch):
    """Each chunk decodes its own pairs just before it is scored: memory holds one chunk's images, not every pair's."""
    import iqabench.benchmarks.fr_distances as fr
    from iqabench.execution.batching import BatchPolicy

    keys = _images(store, n=3)
    metric = build_metric("ssim")
    events: list[str] = []
    decode, score = fr.image_tensor, metric.score
    monkeypatch.setattr(fr, "image_tensor", lambda s, k: (events.append("decode"), decode(s, k))[1])
    metric.score = lambda images, refs=None: (events.append(f"score {len(images)}"), score(images, refs))[1]
    pairs = [(a, b) for a in keys for b in keys]
    values = pair_scores(store, metric, pairs, policy=BatchPolicy(4))
    assert len(values) == 9 and all(v is not None for v in values.values())
    assert events == ["decode"] * 8 + ["score 4"] + ["decode"] * 8 + ["score 4"] + ["decode"] * 2 + ["score 1"]
