"""Training: the loss drops, only adapter weights change, resume continues from the saved step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from iqabench.adapters.iqa_adapter.adapter import AdapterConfig
from iqabench.adapters.iqa_adapter.checkpoint import load_adapter, read_checkpoint
from iqabench.adapters.iqa_adapter.conditioning import MetricStats
from iqabench.adapters.iqa_adapter.dataset import Record, ScoredImageDataset
from iqabench.adapters.iqa_adapter.training import (
    TrainConfig,
    build_adapter_for_training,
    evaluation_loss,
    latest_checkpoint,
    train_adapter,
)
from iqabench.support.tiny_models import tiny_sd_pipeline, tiny_sdxl_pipeline

STATS = {"blur": MetricStats("blur", 1.0, 1.0, {0: 0.0, 50: 1.0, 100: 2.0})}


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a test that trains in bf16 after one in fp32 needs it reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)



def synthetic_dataset(n: int = 8) -> ScoredImageDataset:
    """Checkerboards blurred by a known radius; the "score" is the radius (what the adapter must learn)."""
    rng = np.random.default_rng(0)
    records, scores = [], []
    for i in range(n):
        cells = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(cells).resize((64, 64), Image.NEAREST)
        radius = 2.0 * i / (n - 1)
        blurred = image.filter(ImageFilter.GaussianBlur(radius))
        records.append(Record(str(i), f"pattern {i % 2}", None, lambda im=blurred: im))
        scores.append([radius])
    return ScoredImageDataset(records, scores, ["blur"], STATS, resolution=64)


def config_for(tmp_path, **kw) -> TrainConfig:
    base = dict(output_dir=str(tmp_path / "run"), max_steps=4, batch_size=4, learning_rate=3e-3,
                save_every=2, progress=False, seed=0)
    return TrainConfig(**(base | kw))


def adapter_config() -> AdapterConfig:
    return AdapterConfig(("blur",), stats=STATS, base="tiny-sd")


def frozen_state(pipe) -> dict[str, torch.Tensor]:
    state = {}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            for key, value in module.state_dict().items():
                if "to_k_ip" not in key and "to_v_ip" not in key:
                    state[f"{name}.{key}"] = value.clone()
    return state


def test_training_lowers_loss_and_changes_only_adapter_weights(tmp_path):
    pipe = tiny_sd_pipeline(0)
    data = synthetic_dataset()
    adapter = build_adapter_for_training(pipe, adapter_config())
    before_frozen = frozen_state(pipe)
    before_adapter = {k: v.clone() for k, v in adapter.released_state_dict().items()}
    loss_before = evaluation_loss(pipe, adapter, data)
    result = train_adapter(pipe, adapter, data, config_for(tmp_path, max_steps=6, save_every=6))
    loss_after = evaluation_loss(pipe, adapter, data)
    assert result.step == 6 and len(result.losses) == 6
    assert loss_after < loss_before * 0.98, (loss_before, loss_after)
    after_frozen = frozen_state(pipe)
    assert all(torch.equal(before_frozen[k], after_frozen[k]) for k in before_frozen)
    changed = [k for k, v in adapter.released_state_dict().items() if not torch.equal(v, before_adapter[k])]
    assert set(changed) == set(before_adapter)  # projection and every K'/V' moved
    tensors, config = read_checkpoint(result.checkpoint / "adapter.safetensors")
    assert config.step == 6 and config.metrics == ("blur",) and config.base == "tiny-sd"
    assert "ip_adapter.1.to_k_ip.weight" in tensors
    reloaded = load_adapter(result.checkpoint / "adapter.safetensors", tiny_sd_pipeline(0).unet)
    assert torch.equal(reloaded.released_state_dict()["image_proj.proj.weight"],
                       adapter.released_state_dict()["image_proj.proj.weight"])


def test_resume_continues_from_saved_step_exactly(tmp_path):
    data = synthetic_dataset()
    pipe = tiny_sd_pipeline(0)
    adapter = build_adapter_for_training(pipe, adapter_config())
    full = train_adapter(pipe, adapter, data, config_for(tmp_path / "a", max_steps=4))
    reference = adapter.released_state_dict()

    pipe = tiny_sd_pipeline(0)
    adapter = build_adapter_for_training(pipe, adapter_config())
    first = train_adapter(pipe, adapter, data, config_for(tmp_path / "b", max_steps=2))
    assert first.step == 2 and latest_checkpoint(tmp_path / "b" / "run").name == "checkpoint-2"
    pipe = tiny_sd_pipeline(0)  # a fresh process would start from scratch weights
    adapter = build_adapter_for_training(pipe, adapter_config())
    second = train_adapter(pipe, adapter, data, config_for(tmp_path / "b", max_steps=4))
    assert second.resumed_from == 2 and second.step == 4 and len(second.losses) == 2
    assert second.losses == pytest.approx(full.losses[2:], rel=1e-6)
    for key, value in reference.items():
        assert torch.allclose(adapter.released_state_dict()[key], value, atol=1e-6, rtol=0), key
    state = json.loads((tmp_path / "b" / "run" / "checkpoint-4" / "state.json").read_text())
    assert state["step"] == 4


def test_sdxl_micro_conditioning_trains(tmp_path):
    pipe = tiny_sdxl_pipeline(0)
    adapter = build_adapter_for_training(pipe, AdapterConfig(("blur",), stats=STATS, base="tiny-sdxl"))
    result = train_adapter(pipe, adapter, synthetic_dataset(4), config_for(tmp_path, max_steps=1, save_every=1,
                                                                           gradient_accumulation_steps=1))
    assert result.step == 1 and np.isfinite(result.losses[0])


def test_bad_drop_probabilities_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sum to at most 1"):
        TrainConfig(output_dir=str(tmp_path), quality_drop=0.6, text_drop=0.6)


def test_bf16_mixed_precision_with_gradient_accumulation_trains(tmp_path):
    pipe = tiny_sd_pipeline(0)
    adapter = build_adapter_for_training(pipe, adapter_config())
    before = {k: v.clone() for k, v in adapter.released_state_dict().items()}
    result = train_adapter(pipe, adapter, synthetic_dataset(4),
                           config_for(tmp_path, max_steps=2, save_every=2, mixed_precision="bf16",
                                      gradient_accumulation_steps=2))
    assert result.step == 2 and all(np.isfinite(result.losses))
    after = adapter.released_state_dict()
    assert all(after[k].dtype == torch.float32 for k in after)  # master weights stay fp32 under autocast
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_dataset_smaller_than_one_batch_is_an_error_not_a_hang(tmp_path):
    pipe = tiny_sd_pipeline(0)
    adapter = build_adapter_for_training(pipe, adapter_config())
    with pytest.raises(ValueError, match="fewer than one batch of 4"):
        train_adapter(pipe, adapter, synthetic_dataset(3), config_for(tmp_path, max_steps=1))
