"""The iqa-adapter generator: lambda = 0 is the base model, mixed batches, baseline, fingerprint, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqabench.adapters.iqa_adapter.adapter import AdapterConfig, IQAAdapter
from iqabench.adapters.iqa_adapter.checkpoint import ENV_DIR, save_adapter
from iqabench.adapters.iqa_adapter.conditioning import TargetError, load_stats
from iqabench.contracts.generators import WeightsMissingError, WorkItem, build_generator
from iqabench.contracts.specs import SpecError
from iqabench.execution.runtime import Runtime
from iqabench.support.tiny_models import tiny_sd_pipeline, tiny_sdxl_pipeline

RUNTIME = Runtime(device="cpu", dtype="fp32", batch_size=2)



def tiny_checkpoint(path, base: str = "tiny-sd", builder=tiny_sd_pipeline):
    """A random (but strong) adapter on the tiny base, saved with its metadata."""
    stats = load_stats()
    metrics = ("topiq_nr", "laion_aes")
    adapter = IQAAdapter(AdapterConfig(metrics, stats={m: stats[m] for m in metrics}, base=base),
                         builder(0).unet)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return save_adapter(adapter, path)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images]).astype(np.int16)


def items(params_list):
    prompts = ["a red car", "a cat on a mat", "mountains at dawn"]
    return [WorkItem(f"p{i}", prompts[i % 3], seed=i, params=p) for i, p in enumerate(params_list)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_baseline_is_the_base_model_with_same_settings(checkpoint):
    gen = build_generator(f"iqa-adapter:{checkpoint}[steps=3]", RUNTIME)
    assert gen.baseline() == "tiny-sd[guidance_scale=7.5,height=64,seed=0,steps=3,width=64]"
    assert build_generator(gen.baseline(), RUNTIME).fingerprint()["steps"] == 3


def test_scale_zero_reproduces_base_model_bit_for_bit(checkpoint):
    gen = build_generator(f"iqa-adapter:{checkpoint}[scale=0]", RUNTIME)
    base = build_generator(gen.baseline(), RUNTIME)
    work = items([{}, {"target": "p5"}, {"neg_k": 1.0}])
    assert np.array_equal(pixels(gen.generate(work)), pixels(base.generate(items([{}, {}, {}]))))
    conditioned = build_generator(f"iqa-adapter:{checkpoint}", RUNTIME).generate(work[:1])
    assert np.abs(pixels(conditioned) - pixels(base.generate(items([{}])))).max() > 10


def test_mixed_batch_equals_items_generated_one_by_one(checkpoint):
    gen = build_generator(f"iqa-adapter:{checkpoint}", RUNTIME)
    params = [{"target": "p5"}, {"target": "p95", "neg_k": 1.0}, {"target": "z=0/p50", "scale": 0.5},
              {"target": "p95", "scale": 0.0}]
    work = items(params)
    mixed = pixels(gen.generate(work))
    single = pixels([gen.generate([item])[0] for item in work])
    assert np.array_equal(mixed, single)
    assert np.abs(mixed[0] - pixels(gen.generate(items([{"target": "p95"}])))[0]).max() > 0  # target matters


def test_fingerprint_has_file_hash_and_quality_defaults(checkpoint, tmp_path):
    fp = build_generator(f"iqa-adapter:{checkpoint}", RUNTIME).fingerprint()
    assert len(fp["adapter_sha256"]) == 64 and fp["target"] == "p99" and fp["base"] == "tiny-sd"
    assert build_generator(f"iqa-adapter:{checkpoint}[neg_k=0.5]", RUNTIME).fingerprint() != fp
    other = tiny_checkpoint(tmp_path / "other.safetensors")
    with open(other, "r+b") as handle:  # same layout, one changed byte in the tensor data
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    assert build_generator(f"iqa-adapter:{other}", RUNTIME).fingerprint()["adapter_sha256"] != fp["adapter_sha256"]


def test_bad_targets_and_specs_fail_clearly(checkpoint, tmp_path):
    with pytest.raises(TargetError, match="cannot read quality target"):
        build_generator(f"iqa-adapter:{checkpoint}[target=best]", RUNTIME)
    gen = build_generator(f"iqa-adapter:{checkpoint}", RUNTIME)
    with pytest.raises(TargetError, match="has 3 terms"):
        gen.generate(items([{"target": "p1/p2/p3"}]))
    with pytest.raises(SpecError, match="neither a preset"):
        build_generator(f"iqa-adapter:{tmp_path}/nope.safetensors", RUNTIME)


def test_missing_preset_weights_raise_with_location(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "env"))
    with pytest.raises(WeightsMissingError, match=str(tmp_path / "env")):
        build_generator("iqa-adapter:topiq", RUNTIME)
    with pytest.raises(WeightsMissingError, match="iqa_adapter_hyperiqa"):
        build_generator(f"iqa-adapter:hyperiqa[weights_dir={tmp_path}]", RUNTIME)


def test_sdxl_base_scale_zero_is_exact_and_conditioning_moves_pixels(tmp_path):
    path = tiny_checkpoint(tmp_path / "xl.safetensors", base="tiny-sdxl", builder=tiny_sdxl_pipeline)
    gen = build_generator(f"iqa-adapter:{path}", RUNTIME)
    assert gen.baseline().startswith("tiny-sdxl[")
    base = build_generator(gen.baseline(), RUNTIME)
    work = items([{"scale": 0.0}, {"scale": 0.0}])
    assert np.array_equal(pixels(gen.generate(work)), pixels(base.generate(items([{}, {}]))))
    moved = pixels(gen.generate(items([{"target": "p99"}, {"target": "p1"}])))
    assert np.abs(moved[0] - moved[1]).max() > 0


def test_corrupt_or_foreign_safetensors_metadata_is_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    bad_json = tmp_path / "bad.safetensors"
    save_file({"image_proj.norm.weight": torch.zeros(2)}, str(bad_json), metadata={"iqabench.adapter": "{oops"})
    with pytest.raises(SpecError, match="not a readable IQA-Adapter safetensors file"):
        build_generator(f"iqa-adapter:{bad_json}", RUNTIME)
    no_metrics = tmp_path / "nometrics.safetensors"
    save_file({"image_proj.norm.weight": torch.zeros(2)}, str(no_metrics), metadata={"iqabench.adapter": "[]"})
    with pytest.raises(SpecError, match="without a metric list"):
        build_generator(f"iqa-adapter:{no_metrics}", RUNTIME)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(SpecError, match="not a readable"):
        build_generator(f"iqa-adapter:{garbage}", RUNTIME)
