"""FID top-k: torch-fidelity maths on features, the Store feature cache, top-k subsets, and an offline smoke run."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from iqabench.api import run
from iqabench.benchmarks.fid_topk.features import InceptionFeatures, fid, inception_score, kid, split
from iqabench.benchmarks.fid_topk.references import load_reference
from iqabench.benchmarks.fid_topk.topk import mean_z_scores, top_fraction
from iqabench.benchmarks.geneval.clip import WeightsUnavailableError
from iqabench.contracts.specs import RunSpec


def _images(n, seed, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_fid_of_a_set_with_itself_is_zero_and_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(40, 16)).astype(np.float32))
    b = torch.from_numpy((rng.normal(size=(40, 16)) * 1.5 + 0.3).astype(np.float32))
    assert abs(fid(a, a)) < 1e-6
    # Closed form with scipy's matrix square root (what pytorch-fid does) on the same features.
    mu_a, mu_b = a.numpy().mean(0), b.numpy().mean(0)
    s_a, s_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert fid(a, b) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 images"):
        fid(a[:1], b)


def test_is_and_kid_come_from_torch_fidelity():
    rng = np.random.default_rng(1)
    uniform = torch.zeros(20, 1008)
    assert inception_score(uniform, splits=2) == pytest.approx((1.0, 0.0))  # identical flat predictions: IS = 1
    peaked = torch.from_numpy(rng.normal(size=(20, 1008)).astype(np.float32)) * 50
    assert inception_score(peaked, splits=2)[0] > 5
    f = torch.from_numpy(rng.normal(size=(30, 8)).astype(np.float32))
    mean, _ = kid(f, f + 3, subsets=5, subset_size=10)
    assert mean > 100 and abs(kid(f, f, subsets=5, subset_size=10)[0]) < mean / 100  # unbiased MMD: ~0 on one set


def test_features_are_cached_in_the_store_and_self_fid_is_zero(store):
    keys = [f"{i:064x}" for i in range(4)]
    images = dict(zip(keys, _images(4, 0), strict=True))
    extractor = InceptionFeatures("random", batch_size=4)
    first = extractor.features(store, keys, load=images.__getitem__)
    assert extractor.n_extracted == 4 and first[keys[0]].shape == (2048 + 1008,)
    again = InceptionFeatures("random")
    second = again.features(store, keys, load=lambda k: (_ for _ in ()).throw(AssertionError("re-extracted")))
    assert again.n_extracted == 0
    assert all(np.array_equal(first[k], second[k]) for k in keys)
    pool, _ = split(np.stack([first[k] for k in keys]))
    assert abs(fid(pool, pool)) < 1e-3
    assert pool.std(dim=0).mean() > 1e-3  # the random extractor is not degenerate, so FIDs differ between sets
    other, _ = split(again._extract([Image.new("RGB", (40, 40), (60 * i, 100, 50)) for i in range(4)]))
    assert fid(pool, other) > 1.0


def test_inception_weights_load_safely_into_torch_fidelity(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    random = InceptionFeatures("random")
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in random.model().state_dict().items()}, str(path))
    loaded = InceptionFeatures(str(path))
    images = _images(2, 3)
    assert np.allclose(random._extract(images), loaded._extract(images), atol=1e-5)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError, match=r"weights-inception-2015-12-05-6726825d\.pth not found at "):
        InceptionFeatures()


def test_top_k_subsets_are_the_right_images():
    keys = ["a", "b", "c", "d", "e"]
    scores = {"sharp": dict(zip(keys, [1.0, 2.0, 3.0, 4.0, 5.0], strict=True)),  # higher is better
              "noise": dict(zip(keys, [50.0, 40.0, 30.0, 100.0, 10.0], strict=True))}  # lower is better
    ranking = mean_z_scores(scores, {"sharp": False, "noise": True}, keys)
    z_sharp = (np.arange(1, 6) - 3) / np.std(np.arange(1, 6))
    noise = np.array([50, 40, 30, 100, 10.0])
    z_noise = -(noise - noise.mean()) / noise.std()
    assert ranking == pytest.approx(dict(zip(keys, (z_sharp + z_noise) / 2, strict=True)))
    assert top_fraction(ranking, 40) == ["e", "c"]  # ceil(5 x 0.4) = 2
    assert top_fraction(ranking, 60) == ["e", "c", "b"]
    assert top_fraction(ranking, 10) == ["e", "c"]  # never fewer than 2 (FID needs a covariance)
    scores["noise"]["a"] = None
    assert "a" not in mean_z_scores(scores, {"sharp": False, "noise": True}, keys)
    with pytest.raises(ValueError, match=r"in \(0, 100\]"):
        top_fraction(ranking, 0)


def _reference(tmp_path, n=6):
    folder = tmp_path / "ref"
    folder.mkdir()
    rows = []
    for i, image in enumerate(_images(n, 7, size=(64, 64))):
        image.save(folder / f"{i}.png")
        rows.append({"caption": f"a photo of object {i}", "image": f"{i}.png"})
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["caption", "image"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_reference_loading(tmp_path):
    folder = _reference(tmp_path, 3)
    pairs = load_reference(folder / "pairs.csv")
    assert [p.caption for p in pairs] == [f"a photo of object {i}" for i in range(3)]
    assert [p.caption for p in load_reference(folder)] == [None] * 3  # a plain folder has no captions
    assert len(load_reference(folder / "pairs.csv", limit=2)) == 2
    (folder / "bad.csv").write_text("caption,image\nx,missing.png\ny,0.png\n")
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        load_reference(folder / "bad.csv")


def test_offline_smoke_runs_and_second_generator_reuses_reference_features(tmp_path):
    folder = _reference(tmp_path, 4)
    options = {"reference": str(folder / "pairs.csv"), "weights": "random", "topk": "50", "kid_subsets": 10,
               "allow_small_topk": True}
    spec = RunSpec("fid-topk", ["tiny-sd"], metrics=["piqe", "entropy"], options=options)
    outcome = run(spec, out=tmp_path / "store")
    result = outcome.result
    numeric = result.tables["fid_topk_numeric"]
    assert list(numeric.columns[:4]) == ["FID", "FID top-50%", "IS", "IS_std"]
    assert {"KID", "CLIP-T", "CLIP-I"} <= set(numeric.columns)
    values = numeric.loc["tiny-sd", ["FID", "FID top-50%", "IS", "KID", "CLIP-T", "CLIP-I"]].astype(float)
    assert np.isfinite(values).all() and values["FID"] > 0
    assert result.summary["features_extracted"] == 8 and result.summary["topk_sizes"] == {"50": 2}
    assert any(n.startswith("WEIGHTS-FREE SMOKE RUN") for n in result.notes)
    assert "WEIGHTS-FREE SMOKE RUN" in outcome.report.read_text("utf-8")
    ranking = result.tables["reference_ranking"]
    assert ranking["top-50%"].sum() == 2 and ranking["mean_z"].is_monotonic_decreasing
    # A second generator over the same reference extracts only its own 4 images.
    again = run(RunSpec("fid-topk", ["tiny-sd[guidance_scale=1.0]"], metrics=["piqe", "entropy"], options=options),
                out=tmp_path / "store")
    assert again.result.summary["features_extracted"] == 4


def test_missing_reference_option_is_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="fid-topk needs reference images"):
        run(RunSpec("fid-topk", ["tiny-sd"]), out=tmp_path)


def test_a_top_k_subset_smaller_than_the_feature_dimension_is_refused_before_any_work(tmp_path):
    folder = _reference(tmp_path, 4)
    options = {"reference": str(folder / "pairs.csv"), "weights": "random", "topk": "50"}
    with pytest.raises(ValueError, match=r"top-50% subset of 4 ranked reference images holds 2 images, fewer than "
                                         r"the 2048 Inception features.*allow_small_topk=true"):
        run(RunSpec("fid-topk", ["tiny-sd"], metrics=["piqe"], options=options), out=tmp_path / "store")
    assert not (tmp_path / "store" / "cache" / "images").exists() or not any(
        (tmp_path / "store" / "cache" / "images").rglob("*.png"))


def test_statistics_files_round_trip_and_read_clean_fid_layout(tmp_path):
    from iqabench.benchmarks.fid_topk.stats import load_statistics, save_statistics, statistics_from_features

    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.normal(size=(30, 2048)).astype(np.float32))
    stats = statistics_from_features(feats, "extractor-x", "ab" * 32)
    back = load_statistics(save_statistics(stats, tmp_path / "s.npz"))
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.sigma, stats.sigma)
    assert (back.num_features, back.extractor, back.inception_sha256) == (30, "extractor-x", "ab" * 32)
    np.savez_compressed(tmp_path / "clean.npz", mu=stats.mu.astype(np.float64), sigma=stats.sigma)  # clean-fid
    plain = load_statistics(tmp_path / "clean.npz")
    assert plain.num_features is None and plain.inception_sha256 == ""
    np.savez(tmp_path / "pickled.npz", mu=np.array([object()], dtype=object), sigma=stats.sigma)
    with pytest.raises(ValueError, match="not a plain .npz of arrays.*nothing was unpickled"):
        load_statistics(tmp_path / "pickled.npz")


def test_fid_topk_with_a_statistics_file_equals_torch_fidelity_on_the_same_features(tmp_path):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from typer.testing import CliRunner

    from iqabench.benchmarks.fid_topk.stats import load_statistics
    from iqabench.cli.app import app
    from iqabench.store.store import Store

    folder = _reference(tmp_path, 5)
    out = tmp_path / "coco_train.npz"
    built = CliRunner().invoke(app, ["fid-stats", "build", str(folder), "--out", str(out), "--weights", "random"])
    assert built.exit_code == 0, built.output
    assert "wrote" in built.output and "5 images" in built.output
    stats = load_statistics(out)
    assert stats.num_features == 5 and stats.extractor == "torch-fidelity-inception-v3/random-seed=0"
    options = {"reference": str(folder / "pairs.csv"), "reference_stats": str(out), "weights": "random",
               "topk": "50", "kid_subsets": 4, "allow_small_topk": "true"}
    outcome = run(RunSpec("fid-topk", ["tiny-sd"], metrics=["piqe"], options=options, limit=3), out=tmp_path / "st")
    result = outcome.result
    assert result.summary["reference_stats"]["num_features"] == 5
    # The same features, straight through torch-fidelity: the generated images' cached features vs the folder's.
    store = Store(tmp_path / "st")
    extractor = InceptionFeatures("random")
    gen_keys = [ref.image_key for ref in result.grids["samples"] if ref.group == "tiny-sd"]
    assert len(gen_keys) == 3
    gen = split(np.stack(list(extractor.features(store, gen_keys).values())))[0]
    ref = split(extractor._extract(_images(5, 7, size=(64, 64))))[0]
    expected = fid_statistics_to_metric(fid_features_to_statistics(gen), fid_features_to_statistics(ref), False)
    fid_value = result.tables["fid_topk_numeric"].loc["tiny-sd", "FID"]
    assert fid_value == pytest.approx(expected["frechet_inception_distance"], rel=1e-6)
    # Statistics made with other Inception weights are refused before any work.
    np.savez_compressed(tmp_path / "other.npz", mu=stats.mu, sigma=stats.sigma, extractor=np.array("other-net"))
    with pytest.raises(ValueError, match="come from extractor 'other-net'"):
        run(RunSpec("fid-topk", ["tiny-sd"], metrics=["piqe"], options={**options, "reference_stats":
                                                                        str(tmp_path / "other.npz")}),
            out=tmp_path / "st2")


def test_top_k_subsets_come_from_the_topk_reference_of_any_size(tmp_path):
    """Table 5's structure on the tiny model: captions + CLIP-I partners from `reference`, FID-Full from the
    statistics file, top-k% from the (larger) ranked `topk_reference` set, scored by every metric of the run."""
    from iqabench.benchmarks.fid_topk.stats import build_statistics, save_statistics

    captions = _reference(tmp_path, 3)
    ranked = tmp_path / "train"
    ranked.mkdir()
    for i, image in enumerate(_images(6, 11, size=(64, 64))):
        image.save(ranked / f"train_{i}.png")
    stats = save_statistics(build_statistics(ranked, "random"), tmp_path / "train.npz")
    options = {"reference": str(captions / "pairs.csv"), "reference_stats": str(stats), "topk_reference": str(ranked),
               "weights": "random", "topk": "50", "kid_subsets": 4, "allow_small_topk": True}
    outcome = run(RunSpec("fid-topk", ["tiny-sd"], metrics=["piqe", "entropy"], options=options, limit=2),
                  out=tmp_path / "store")
    result = outcome.result
    assert outcome.complete
    assert result.summary["n_reference"] == 6 and result.summary["topk_sizes"] == {"50": 3}  # the ranked set
    assert result.summary["reference_stats"]["num_features"] == 6
    ranking = result.tables["reference_ranking"]
    assert sorted(ranking["image"].map(lambda p: p.rsplit("/", 1)[-1])) == [f"train_{i}.png" for i in range(6)]
    numeric = result.tables["fid_topk_numeric"]
    assert np.isfinite(numeric.loc["tiny-sd", ["FID", "FID top-50%", "KID", "CLIP-I"]].astype(float)).all()
    assert result.summary["features_extracted"] == 2 + 2 + 6  # generated, caption partners, ranked set


def test_a_subset_that_falls_below_the_floor_after_failed_scores_is_noted(tmp_path, monkeypatch):
    """The plan's size check counts reference images before they are scored; images without every metric's score
    leave the ranking, so a subset can end below the floor: the result says so instead of passing silently."""
    from iqabench.benchmarks.fid_topk import benchmark as fid_benchmark
    from iqabench.metrics import register_metric

    class SomeFail(torch.nn.Module):  # NaN (a failed score) for about half the images, decided by their pixels
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = x.mean(dim=(1, 2, 3))
            odd = (mean * 1e4).floor().remainder(2) == 1
            return torch.where(odd, torch.full_like(mean, float("nan")), mean)

    register_metric("test_fid_some_fail", lower_better=False, overwrite=True)(lambda device: SomeFail())
    monkeypatch.setattr(fid_benchmark, "FEATURE_DIM", 4)  # a floor the tiny set can cross: top-50% of 8 = 4
    captions = _reference(tmp_path, 2)
    ranked_folder = tmp_path / "train"
    ranked_folder.mkdir()
    for i, image in enumerate(_images(8, 5, size=(64, 64))):
        image.save(ranked_folder / f"train_{i}.png")
    options = {"reference": str(captions / "pairs.csv"), "topk_reference": str(ranked_folder), "weights": "random",
               "topk": "50", "kid_subsets": 2}
    outcome = run(RunSpec("fid-topk", ["tiny-sd"], metrics=["test_fid_some_fail"], options=options, limit=2),
                  out=tmp_path / "store")
    ranked = len(outcome.result.tables["reference_ranking"])
    assert 2 <= ranked < 8  # some reference images failed (NaN), so the ranking lost them
    note = next(n for n in outcome.result.notes if n.startswith("Below the 2048-image floor"))
    assert f"only {ranked} of 8 reference images" in note
