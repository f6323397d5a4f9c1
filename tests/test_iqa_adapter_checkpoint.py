"""Checkpoints: released layout both ways, metadata, shape inference, clear errors, presets."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from iqabench.adapters.iqa_adapter.adapter import AdapterConfig, IQAAdapter
from iqabench.adapters.iqa_adapter.checkpoint import (
    ENV_DIR,
    load_adapter,
    preset_file,
    read_checkpoint,
    save_adapter,
)
from iqabench.adapters.iqa_adapter.conditioning import load_stats
from iqabench.adapters.iqa_adapter.projection import CheckpointError
from iqabench.contracts.generators import WeightsMissingError
from iqabench.support.tiny_models import tiny_cross_attention_unet


def make_adapter(seed: int = 0, **kw) -> IQAAdapter:
    stats = load_stats()
    metrics = kw.pop("metrics", ("topiq_nr", "laion_aes"))
    config = AdapterConfig(metrics, stats={m: stats[m] for m in metrics}, base="tiny-sd", **kw)
    adapter = IQAAdapter(config, tiny_cross_attention_unet(seed))
    torch.manual_seed(seed + 100)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p))
    return adapter


def released_dict(adapter: IQAAdapter) -> dict:
    """What the authors' training script saves: nested image_proj / ip_adapter dicts."""
    flat = adapter.released_state_dict()
    return {"image_proj": {k[len("image_proj."):]: v.clone() for k, v in flat.items() if k.startswith("image_proj.")},
            "ip_adapter": {k[len("ip_adapter."):]: v.clone() for k, v in flat.items() if k.startswith("ip_adapter.")}}


def test_saved_checkpoint_loads_back_bit_identically(tmp_path):
    adapter = make_adapter(projection="mlp", n_tokens=3, use_flag=True, pos_frequencies=2)
    path = save_adapter(adapter, tmp_path / "a.safetensors", step=7)
    tensors, config = read_checkpoint(path)
    assert set(tensors) == set(adapter.released_state_dict())
    assert "ip_adapter.1.to_k_ip.weight" in tensors and "image_proj.proj.0.weight" in tensors
    assert config == adapter.config.with_updates(step=7)
    again = load_adapter(path, tiny_cross_attention_unet(0))
    for key, value in adapter.released_state_dict().items():
        assert torch.equal(again.released_state_dict()[key], value), key
    z = torch.tensor([[1.0, -0.5]])
    assert torch.equal(again.tokens(z), adapter.tokens(z))


def test_released_bin_layout_loads_without_remapping(tmp_path):
    adapter = make_adapter(1)
    path = tmp_path / "released.bin"
    torch.save(released_dict(adapter), path)
    loaded = load_adapter(path, tiny_cross_attention_unet(1), metrics=("topiq_nr", "laion_aes"))
    assert loaded.config.projection == "linear" and loaded.config.n_tokens == 2
    assert not loaded.config.use_flag and loaded.config.pos_frequencies == 0
    assert loaded.config.stats["topiq_nr"].mean == pytest.approx(0.5492246687400396)  # CC3M stats by default
    for key, value in adapter.released_state_dict().items():
        assert torch.equal(loaded.released_state_dict()[key], value)


def test_released_safetensors_without_metadata_infers_shapes(tmp_path):
    adapter = make_adapter(2, metrics=("topiq_nr",), n_tokens=4, use_flag=True, pos_frequencies=10)
    path = tmp_path / "flat.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.released_state_dict().items()}, str(path))
    loaded = load_adapter(path, tiny_cross_attention_unet(2), metrics=("topiq_nr",))
    assert (loaded.config.n_tokens, loaded.config.use_flag, loaded.config.pos_frequencies) == (4, True, 10)


def test_released_file_without_metrics_asks_for_them(tmp_path):
    path = tmp_path / "r.bin"
    torch.save(released_dict(make_adapter()), path)
    with pytest.raises(CheckpointError, match="which metrics"):
        load_adapter(path, tiny_cross_attention_unet())


def test_stated_option_contradicting_tensors_is_an_error(tmp_path):
    path = save_adapter(make_adapter(), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="n_tokens=4 contradicts"):
        load_adapter(path, tiny_cross_attention_unet(), n_tokens=4)


def test_wrong_cross_attention_width_fails_clearly(tmp_path):
    path = save_adapter(make_adapter(), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="cross-attention width is 48"):
        load_adapter(path, tiny_cross_attention_unet(cross_attention_dim=48))


def test_missing_layer_fails_clearly(tmp_path):
    tensors = make_adapter().released_state_dict()
    del tensors["ip_adapter.5.to_v_ip.weight"]
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    with pytest.raises(CheckpointError, match=r"missing \['5.to_v_ip.weight'\]"):
        load_adapter(path, tiny_cross_attention_unet(), metrics=("topiq_nr", "laion_aes"))


def test_wrong_layer_shape_fails_clearly(tmp_path):
    tensors = make_adapter().released_state_dict()
    tensors["ip_adapter.3.to_k_ip.weight"] = torch.zeros(16, 32)
    path = tmp_path / "s.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    with pytest.raises(CheckpointError, match=r"ip_adapter.3.to_k_ip.weight has shape \(16, 32\)"):
        load_adapter(path, tiny_cross_attention_unet(), metrics=("topiq_nr", "laion_aes"))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.bin"
    torch.save({"image_proj": payload}, path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(path)
    assert not marker.exists()


def test_not_an_adapter_file(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"foo": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an IQA-Adapter file"):
        load_adapter(path, tiny_cross_attention_unet(), metrics=("topiq_nr",))


def test_preset_missing_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    with pytest.raises(WeightsMissingError) as info:
        preset_file("topiq+laion_aes")
    text = str(info.value)
    assert str(tmp_path) in text and "iqa_adapter_topiq_nr+laion_aes.safetensors" in text and ENV_DIR in text
    (tmp_path / "iqa_adapter_topiq_nr+laion_aes.bin").write_bytes(b"x")
    assert preset_file("topiq+laion_aes").name == "iqa_adapter_topiq_nr+laion_aes.bin"
    other = tmp_path / "other"
    with pytest.raises(WeightsMissingError, match=str(other)):
        preset_file("topiq", other)  # the weights_dir= option wins over the env var


@pytest.mark.parametrize("text", ["{oops", "[]", '{"n_tokens": 2}'])
def test_unreadable_metadata_is_a_checkpoint_error(tmp_path, text):
    tensors = {k: v.contiguous() for k, v in make_adapter().released_state_dict().items()}
    path = tmp_path / "meta.safetensors"
    save_file(tensors, str(path), metadata={"iqabench.adapter": text})
    with pytest.raises(CheckpointError, match="unreadable 'iqabench.adapter' metadata"):
        read_checkpoint(path)
