"""Base diffusers generators: options, weights checks, baseline rule, fingerprints, exact batch invariance."""

import json

import numpy as np
import pytest

from iqabench.adapters.diffusers_base import DiffusersGenerator, find_weights
from iqabench.contracts.generators import Generator, WeightsMissingError, WorkItem, build_generator
from iqabench.contracts.registry import GENERATORS
from iqabench.contracts.specs import SpecError
from iqabench.execution.runtime import Runtime

SDXL_ID = "stabilityai/stable-diffusion-xl-base-1.0"
CPU4 = Runtime(device="cpu", dtype="fp32", batch_size=4)
A = WorkItem("a", "a photo of a cat", 11)
B = WorkItem("b", "a red sports car on a wet street", 12)
C = WorkItem("c", "an astronaut riding a horse", 13)
D = WorkItem("d", "a bowl of fruit", 14)
E = WorkItem("e", "a lighthouse at dusk", 15)



@pytest.fixture(scope="module", params=["tiny-sd", "tiny-sdxl"])
def tiny(request):
    return build_generator(request.param, CPU4)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def _fake_hub_snapshot(cache, repo=SDXL_ID, commit="0123456789abcdef0123456789abcdef01234567"):
    """A hub-cache layout with empty files: enough for the offline presence check (every loaded component's
    config plus its weights or vocabulary), never loaded."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    index = {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0",
             "scheduler": ["diffusers", "EulerDiscreteScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "feature_extractor": [None, None]}
    files = ("scheduler/scheduler_config.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
             "text_encoder/model.safetensors", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json")
    for name in files:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(b"")
    (snapshot / "model_index.json").write_text(json.dumps(index))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


# -- registration, protocol ------------------------------------------------------------------------------
def test_builtin_families_are_registered():
    for name in ("sdxl", "sd15", "sd21", "diffusers", "tiny-sd", "tiny-sdxl"):
        assert name in GENERATORS


def test_tiny_generator_follows_protocol_and_loads_lazily(tiny):
    fresh = build_generator(tiny.family, CPU4)
    assert isinstance(fresh, Generator) and isinstance(fresh, DiffusersGenerator)
    assert fresh.name == tiny.family
    fresh.fingerprint()
    fresh.baseline()
    assert fresh._pipeline is None  # neither touches the model


# -- generation -----------------------------------------------------------------------------------------------
def test_generates_64px_rgb_images_in_input_order(tiny):
    images = tiny.generate([A, B])
    assert [im.size for im in images] == [(64, 64), (64, 64)] and {im.mode for im in images} == {"RGB"}
    assert tiny.generate([]) == []


def test_image_is_identical_whatever_batch_it_is_in(tiny):
    """Exact pixel equality: alone, with other neighbours, at another position, in a second chunk."""
    alone = _pixels(tiny.generate([A]))[0]
    with_others = _pixels(tiny.generate([B, A, C]))
    full = _pixels(tiny.generate([C, D, B, A]))
    spilled = _pixels(tiny.generate([B, C, D, E, A]))  # A lands alone in the second call
    assert np.array_equal(alone, with_others[1])
    assert np.array_equal(alone, full[3])
    assert np.array_equal(alone, spilled[4])
    assert np.array_equal(with_others[0], spilled[0])  # B too
    assert not np.array_equal(alone, with_others[0])


def test_same_seed_same_image_other_seed_other_image(tiny):
    twice = _pixels(tiny.generate([A, A]))
    other_seed = _pixels(tiny.generate([WorkItem("a", A.prompt, A.seed + 1)]))[0]
    assert np.array_equal(twice[0], twice[1])
    assert not np.array_equal(twice[0], other_seed)


def test_item_params_match_the_same_option_in_the_spec(tiny):
    """Items with different params go in separate calls; the result equals a generator built with that option."""
    no_cfg = WorkItem("a", A.prompt, A.seed, {"guidance_scale": 1.0})
    mixed = _pixels(tiny.generate([A, no_cfg, B]))
    reference = build_generator(f"{tiny.family}[guidance_scale=1.0]", CPU4)
    assert np.array_equal(mixed[1], _pixels(reference.generate([A]))[0])
    assert np.array_equal(mixed[0], _pixels(tiny.generate([A]))[0])
    assert not np.array_equal(mixed[0], mixed[1])


def test_unknown_item_param_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="unknown item param 'guidance'. Did you mean 'guidance_scale'"):
        tiny.generate([WorkItem("a", "x", 0, {"guidance": 2.0})])


def test_weight_seed_option_changes_the_model():
    base = _pixels(build_generator("tiny-sd", CPU4).generate([A]))[0]
    other = _pixels(build_generator("tiny-sd[seed=1]", CPU4).generate([A]))[0]
    assert not np.array_equal(base, other)


# -- fingerprint ------------------------------------------------------------------------------------------------
def test_fingerprint_changes_with_what_changes_pixels():
    base = build_generator("tiny-sd", CPU4).fingerprint()
    for spec in ("tiny-sd[steps=5]", "tiny-sd[guidance_scale=3]", "tiny-sd[height=128]",
                 "tiny-sd[negative_prompt=blurry]", "tiny-sd[seed=1]", "tiny-sdxl"):
        assert build_generator(spec, CPU4).fingerprint() != base, spec
    assert build_generator("tiny-sd", Runtime("cpu", "bf16", 4)).fingerprint() != base


def test_fingerprint_ignores_what_does_not_change_pixels():
    base = build_generator("tiny-sd", CPU4).fingerprint()
    assert build_generator("tiny-sd[steps=4,guidance_scale=7.5]", CPU4).fingerprint() == base  # defaults spelled
    assert build_generator("tiny-sd[guidance_scale=7.50]", Runtime("cpu", "float32", 1)).fingerprint() == base
    assert build_generator("tiny-sd[guidance_scale=1]", CPU4).fingerprint() == (
        build_generator("tiny-sd[guidance_scale=1.0]", CPU4).fingerprint())


# -- baseline rule ---------------------------------------------------------------------------------------------
def test_baseline_is_same_spec_without_cfg():
    assert build_generator("tiny-sd", CPU4).baseline() == "tiny-sd[guidance_scale=1.0]"
    assert build_generator("tiny-sdxl[steps=2]", CPU4).baseline() == "tiny-sdxl[guidance_scale=1.0,steps=2]"
    assert build_generator("tiny-sd[guidance_scale=1]", CPU4).baseline() is None
    baseline = build_generator(build_generator("tiny-sd[steps=3]", CPU4).baseline(), CPU4)
    assert baseline.baseline() is None and baseline.options["steps"] == 3


def test_hub_preset_baseline_and_fingerprint_from_cache_without_loading(empty_hub_cache):
    snapshot = _fake_hub_snapshot(empty_hub_cache)
    gen = build_generator("sdxl", CPU4)
    assert gen.baseline() == "sdxl[guidance_scale=1.0]"
    fp = gen.fingerprint()
    assert fp["source"] == SDXL_ID and fp["commit"] == snapshot.name
    assert fp["scheduler"] == "EulerDiscreteScheduler" and (fp["steps"], fp["guidance_scale"]) == (35, 7.5)
    assert (fp["height"], fp["width"]) == (1024, 1024)
    assert gen._pipeline is None
    assert GENERATORS.get("sdxl").weights_status().startswith("present")


# -- weights and option errors ------------------------------------------------------------------------------
def test_missing_hub_weights_say_what_where_and_how(empty_hub_cache):
    with pytest.raises(WeightsMissingError) as info:
        build_generator("sdxl", CPU4)
    message = str(info.value)
    assert SDXL_ID in message and str(empty_hub_cache) in message
    assert f"hf download {SDXL_ID}" in message and "sdxl[path=/dir]" in message
    assert message.count(". ") == 0  # one sentence
    assert GENERATORS.get("sdxl").weights_status().startswith("missing")


def test_partial_download_is_reported_missing(empty_hub_cache):
    snapshot = _fake_hub_snapshot(empty_hub_cache)
    (snapshot / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    location, detail = find_weights(SDXL_ID)
    assert location is None and "unet weights" in detail
    with pytest.raises(WeightsMissingError, match="unet weights"):
        build_generator("sdxl", CPU4)


def test_missing_local_path_is_a_clear_error():
    with pytest.raises(WeightsMissingError, match=r"/nonexistent \(no model_index.json"):
        build_generator("sdxl[path=/nonexistent]", CPU4)
    with pytest.raises(WeightsMissingError, match="/nonexistent"):
        build_generator("diffusers:/nonexistent/pipe", CPU4)


def test_unknown_option_suggests_close_match():
    with pytest.raises(SpecError, match="unknown option 'step'. Did you mean 'steps'"):
        build_generator("tiny-sd[step=3]", CPU4)
    with pytest.raises(SpecError, match="unknown option 'guidance'. Did you mean 'guidance_scale'"):
        build_generator("sdxl[guidance=3]", CPU4)


@pytest.mark.parametrize("spec, expected", [
    ("tiny-sd[steps=0]", "steps=0 is invalid, expected an integer >= 1"),
    ("tiny-sd[height=65]", "multiple of 8"),
    ("tiny-sd[seed=x]", "integer >= 0"),
    ("tiny-sd:foo", "takes no ':foo' part"),
    ("sdxl[path=/x,revision=main]", "cannot go with path="),
    ("diffusers", "needs a hub id or a folder"),
])
def test_bad_specs_are_one_clear_error(spec, expected):
    with pytest.raises(SpecError, match=expected.replace("(", r"\(")):
        build_generator(spec, CPU4)


# -- loading real folders -----------------------------------------------------------------------------------
def test_local_folder_loads_offline_and_matches_the_tiny_model(tmp_path):
    from iqabench.support.tiny_models import tiny_sd_pipeline

    tiny_sd_pipeline(0).save_pretrained(tmp_path / "pipe")
    expected = _pixels(build_generator("tiny-sd", CPU4).generate([A, B]))
    from_path = build_generator(f"sd15[path={tmp_path / 'pipe'},steps=4,height=64,width=64]", CPU4)
    any_pipe = build_generator(f"diffusers:{tmp_path / 'pipe'}[steps=4]", CPU4)  # else the pipeline's defaults
    assert any_pipe.baseline() == f"diffusers:{tmp_path / 'pipe'}[guidance_scale=1.0,steps=4]"
    fp = from_path.fingerprint()
    assert fp["source"] == str(tmp_path / "pipe") and fp["scheduler"] == "DDIMScheduler" and "files" in fp
    for gen in (from_path, any_pipe):
        got = _pixels(gen.generate([A, B]))
        assert all(np.array_equal(x, y) for x, y in zip(expected, got, strict=True))
