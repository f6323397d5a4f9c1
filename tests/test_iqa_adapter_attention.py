"""Decoupled quality cross-attention: parity with diffusers' IP-Adapter processor, exact lambda = 0."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0

from iqabench.adapters.iqa_adapter.attention import (
    QualityAttnProcessor,
    install_quality_processors,
    quality_processors,
    set_quality_scale,
)
from iqabench.support.tiny_models import tiny_cross_attention_unet


def cross_attention(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(query_dim=32, cross_attention_dim=24, heads=4, dim_head=8).eval()


def test_matches_diffusers_ip_adapter_processor_within_1e5():
    attn = cross_attention()
    ours = QualityAttnProcessor(hidden_size=32, cross_attention_dim=24, num_tokens=2, scale=0.7)
    theirs = IPAdapterAttnProcessor2_0(hidden_size=32, cross_attention_dim=24, num_tokens=(2,), scale=0.7)
    torch.nn.init.normal_(ours.to_k_ip.weight)
    torch.nn.init.normal_(ours.to_v_ip.weight)
    theirs.to_k_ip[0].weight.data.copy_(ours.to_k_ip.weight)
    theirs.to_v_ip[0].weight.data.copy_(ours.to_v_ip.weight)
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 16, 32, generator=g)
    text, quality = torch.randn(3, 7, 24, generator=g), torch.randn(3, 2, 24, generator=g)
    with torch.no_grad():
        expected = theirs(attn, hidden, encoder_hidden_states=(text, [quality]))
        got = ours(attn, hidden, encoder_hidden_states=torch.cat([text, quality], dim=1))
        text_only = AttnProcessor2_0()(attn, hidden, encoder_hidden_states=text)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert (got - text_only).abs().max() > 1e-3  # the quality branch really contributes


def test_scale_zero_skips_quality_branch_bit_for_bit():
    attn = cross_attention(3)
    proc = QualityAttnProcessor(32, 24, num_tokens=2, scale=0.0)
    torch.nn.init.constant_(proc.to_v_ip.weight, float("inf"))  # 0 * inf would be NaN if the branch ran
    hidden, text, quality = torch.randn(2, 10, 32), torch.randn(2, 5, 24), torch.randn(2, 2, 24)
    with torch.no_grad():
        got = proc(attn, hidden, encoder_hidden_states=torch.cat([text, quality], dim=1))
        base = AttnProcessor2_0()(attn, hidden, encoder_hidden_states=text)
    assert torch.equal(got, base)


def test_per_sample_scale_equals_separate_calls_and_tiles_over_cfg_batch():
    attn = cross_attention(4)
    proc = QualityAttnProcessor(32, 24, num_tokens=2)
    torch.nn.init.normal_(proc.to_k_ip.weight)
    torch.nn.init.normal_(proc.to_v_ip.weight)
    hidden, ctx = torch.randn(4, 9, 32), torch.randn(4, 6, 24)
    proc.scale = torch.tensor([0.0, 1.5])  # two items, CFG-doubled batch of 4: [uncond a, uncond b, cond a, cond b]
    with torch.no_grad():
        mixed = proc(attn, hidden, encoder_hidden_states=ctx)
        singles = []
        for i, s in enumerate([0.0, 1.5, 0.0, 1.5]):
            proc.scale = s
            singles.append(proc(attn, hidden[i:i + 1], encoder_hidden_states=ctx[i:i + 1]))
    assert torch.allclose(mixed, torch.cat(singles), atol=1e-5, rtol=1e-5)
    proc.scale = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="does not tile"):
        proc(attn, hidden, encoder_hidden_states=ctx)


def test_install_covers_every_cross_attention_layer_at_released_indices():
    unet = tiny_cross_attention_unet()
    install_quality_processors(unet, num_tokens=2)
    found = list(quality_processors(unet))
    names = list(unet.attn_processors)
    assert [i for i, _, _ in found] == [i for i, n in enumerate(names) if n.endswith("attn2.processor")]
    assert [i for i, _, _ in found] == [1, 3, 5, 7]
    for _, name, proc in found:
        attn = unet.get_submodule(name.removesuffix(".processor"))
        assert torch.equal(proc.to_k_ip.weight, attn.to_k.weight)  # K'/V' start from K/V (released init)
        assert torch.equal(proc.to_v_ip.weight, attn.to_v.weight)
    assert all(isinstance(unet.attn_processors[n], AttnProcessor2_0) for n in names if n.endswith("attn1.processor"))


def test_unet_with_zero_scale_equals_base_unet_exactly():
    base, adapted = tiny_cross_attention_unet(5), tiny_cross_attention_unet(5)
    install_quality_processors(adapted, num_tokens=2)
    set_quality_scale(adapted, 0.0)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500])
    text, quality = torch.randn(2, 7, 32, generator=g), torch.randn(2, 2, 32, generator=g)
    with torch.no_grad():
        ref = base(x, t, encoder_hidden_states=text).sample
        got = adapted(x, t, encoder_hidden_states=torch.cat([text, quality], 1)).sample
        set_quality_scale(adapted, 1.0)
        moved = adapted(x, t, encoder_hidden_states=torch.cat([text, quality], 1)).sample
    assert torch.equal(got, ref)
    assert not torch.allclose(moved, ref)
