"""Pipeline arguments that put per-item quality tokens into both CFG branches.

diffusers' SD / SDXL pipelines accept ``prompt_embeds`` / ``negative_prompt_embeds``;
we encode the prompts with the pipeline's own ``encode_prompt`` and append each
item's quality tokens along the token axis: the target's tokens to the
conditional branch, zero-input (or -k * q) tokens to the unconditional one.
Because the tokens ride in the batch dimension and lambda is a per-sample
tensor, every item keeps its own target, scale and neg_k in a mixed batch
(diffusers' native IP-Adapter path shares one embedding set across samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch

from .adapter import IQAAdapter


def is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or hasattr(pipe, "tokenizer_2")


def uses_cfg(pipe: Any, guidance_scale: float) -> bool:
    """The pipelines' own rule: CFG when guidance_scale > 1 and the UNet is not guidance-distilled."""
    return guidance_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def encode_prompts(pipe: Any, prompts: Sequence[str], negative_prompt: str | Sequence[str] | None,
                   cfg: bool, device: torch.device | str) -> dict[str, torch.Tensor | None]:
    """The pipeline's text embeddings, computed by its own ``encode_prompt`` (so they equal what it would use)."""
    prompts = list(prompts)
    negative = None
    if negative_prompt is not None:
        negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    if is_sdxl(pipe):
        pe, npe, pooled, npooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
            negative_prompt=negative)
        return {"prompt_embeds": pe, "negative_prompt_embeds": npe, "pooled_prompt_embeds": pooled,
                "negative_pooled_prompt_embeds": npooled}
    pe, npe = pipe.encode_prompt(prompts, device, 1, cfg, negative_prompt=negative)
    return {"prompt_embeds": pe, "negative_prompt_embeds": npe}


def quality_pipeline_kwargs(pipe: Any, adapter: IQAAdapter, prompts: Sequence[str], *,
                            targets: Sequence[Any], neg_ks: Sequence[float], guidance_scale: float,
                            negative_prompt: str | Sequence[str] | None = None) -> dict[str, Any]:
    """``prompt_embeds`` (+ negatives, + pooled for SDXL) with each item's quality tokens appended.

    Replaces ``prompt`` / ``negative_prompt`` in a pipeline call; everything
    else (seeds, steps, size) stays as the base generator sets it.
    """
    if not (len(prompts) == len(targets) == len(neg_ks)):
        raise ValueError("prompts, targets and neg_ks must have one entry per item")
    device = adapter.projection.norm.weight.device
    cfg = uses_cfg(pipe, guidance_scale)
    with torch.no_grad():
        embeds = encode_prompts(pipe, prompts, negative_prompt, cfg, device)
        z = adapter.target_z(targets)
        cond = adapter.tokens(z)
        embeds["prompt_embeds"] = torch.cat([embeds["prompt_embeds"], cond.to(embeds["prompt_embeds"].dtype)], 1)
        if cfg:
            uncond = adapter.negative_tokens_per_item(z, neg_ks)
            neg = embeds["negative_prompt_embeds"]
            embeds["negative_prompt_embeds"] = torch.cat([neg, uncond.to(neg.dtype)], 1)
        else:
            embeds.pop("negative_prompt_embeds", None)
            embeds.pop("negative_pooled_prompt_embeds", None)
    return embeds


@contextmanager
def quality_scale(adapter: IQAAdapter, scales: Sequence[float]):
    """Set per-item lambda for one pipeline call; restore 1.0 afterwards."""
    values = [float(s) for s in scales]
    adapter.set_scale(values[0] if len(set(values)) == 1 else torch.tensor(values))
    try:
        yield
    finally:
        adapter.set_scale(1.0)
