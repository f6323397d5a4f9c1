"""Decoupled cross-attention for quality tokens (paper Sec. 3.2, after IP-Adapter).

    out = Softmax(Q K^T / sqrt d) V  +  lambda * Softmax(Q K'^T / sqrt d) V'

Q is shared; K, V come from the text tokens through the layer's own ``to_k``/
``to_v``; K', V' come from the quality tokens through the processor's
``to_k_ip``/``to_v_ip`` (the released parameter names). The quality tokens ride
at the end of ``encoder_hidden_states``; the processor knows how many there are
and splits them off, so the text branch sees exactly the tokens the base model
sees.

Why our own processor instead of diffusers' ``IPAdapterAttnProcessor2_0``:

* lambda may differ per sample (``scale`` is a float or a ``[batch]`` tensor,
  tiled over the CFG-doubled batch), so one batch can mix items;
* lambda == 0 skips the branch entirely (adding ``0 * x`` is exact only for
  finite ``x``, and the branch costs time);
* the text branch repeats ``AttnProcessor2_0`` op for op, on a contiguous copy
  of the text tokens, so at lambda == 0 it is bit-identical to the base model.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class QualityAttnProcessor(nn.Module):
    """Attention processor for one cross-attention layer (``attn2``) with K'/V' for quality tokens."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, num_tokens: int, scale: float = 1.0):
        super().__init__()
        if num_tokens < 1:
            raise ValueError("an IQA-Adapter needs at least one quality token")
        self.hidden_size = hidden_size
        self.cross_attention_dim = cross_attention_dim
        self.num_tokens = num_tokens
        self.scale: float | torch.Tensor = scale
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def _scale_for(self, batch: int, ref: torch.Tensor) -> float | torch.Tensor | None:
        """None when the quality branch must be skipped; else a float or a [batch, 1, 1] tensor."""
        scale = self.scale
        if not torch.is_tensor(scale):
            return None if float(scale) == 0.0 else float(scale)
        flat = scale.reshape(-1)
        if bool((flat == 0).all()):
            return None
        if batch % flat.numel():
            raise ValueError(
                f"per-sample quality scale has {flat.numel()} entries, which does not tile a batch of {batch}"
            )
        # Under CFG the batch is [uncond items, cond items]; the same per-item scales apply to both halves.
        return flat.repeat(batch // flat.numel()).to(device=ref.device, dtype=ref.dtype)[:, None, None]

    def forward(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("QualityAttnProcessor is for cross-attention layers; it got no encoder_hidden_states")
        if encoder_hidden_states.shape[1] <= self.num_tokens:
            raise ValueError(
                f"encoder_hidden_states has {encoder_hidden_states.shape[1]} tokens; expected text tokens "
                f"followed by {self.num_tokens} quality tokens"
            )
        split = encoder_hidden_states.shape[1] - self.num_tokens
        quality_tokens = encoder_hidden_states[:, split:]
        encoder_hidden_states = encoder_hidden_states[:, :split].contiguous()

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                       dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        scale = self._scale_for(batch_size, hidden_states)
        if scale is not None:
            # The quality branch: same Q, new K'/V' on the (un-normalised, as in IP-Adapter) quality tokens.
            ip_key = self.to_k_ip(quality_tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ip_value = self.to_v_ip(quality_tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ip_out = F.scaled_dot_product_attention(query, ip_key, ip_value, attn_mask=None,
                                                    dropout_p=0.0, is_causal=False)
            ip_out = ip_out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
            hidden_states = hidden_states + scale * ip_out

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _module_of(unet: nn.Module, processor_name: str) -> nn.Module:
    return unet.get_submodule(processor_name.removesuffix(".processor"))


def install_quality_processors(unet: nn.Module, num_tokens: int, *, init_from_base: bool = True
                               ) -> dict[str, object]:
    """Put a :class:`QualityAttnProcessor` on every cross-attention layer; return the previous processors.

    Self-attention layers keep their processor. With ``init_from_base`` K'/V'
    start as copies of the layer's K/V (the released training's initialisation),
    so training starts from "quality tokens attended like text tokens".
    Returns the original processor dict so callers can restore the base model.
    """
    original = dict(unet.attn_processors)
    new: dict[str, object] = {}
    param = next(unet.parameters())
    for name, processor in original.items():
        attn = _module_of(unet, name)
        if not getattr(attn, "is_cross_attention", False):
            new[name] = processor
            continue
        proc = QualityAttnProcessor(attn.to_k.out_features, attn.to_k.in_features, num_tokens)
        if init_from_base:
            with torch.no_grad():
                proc.to_k_ip.weight.copy_(attn.to_k.weight)
                proc.to_v_ip.weight.copy_(attn.to_v.weight)
        new[name] = proc.to(device=param.device, dtype=param.dtype)
    unet.set_attn_processor(new)
    return original


def quality_processors(unet: nn.Module) -> Iterator[tuple[int, str, QualityAttnProcessor]]:
    """(index in ``unet.attn_processors`` order, name, processor) of each quality processor.

    The index is the released checkpoints' key prefix: ``ip_adapter.<index>.to_k_ip.weight``.
    """
    for index, (name, proc) in enumerate(unet.attn_processors.items()):
        if isinstance(proc, QualityAttnProcessor):
            yield index, name, proc


def set_quality_scale(unet: nn.Module, scale: float | torch.Tensor) -> None:
    """lambda for every quality processor: a float, or a per-sample ``[batch]`` tensor."""
    for _, _, proc in quality_processors(unet):
        proc.scale = scale
