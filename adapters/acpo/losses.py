"""The ACPO loss of one batch (see :class:`.config.AcpoConfig` for the formula).

Draws (all from the step's generator, so a resumed run draws what the uninterrupted one would):

* the late timestep t <= T_max for the anchor and quality terms (t >= K with the rollout, so it has K distinct
  steps; one t per batch for the rollout's shared schedule, one per sample for ``one-step``);
* with ``mse_window="all"`` (the paper: the original denoising MSE "throughout"), an independent timestep
  t_mse over all training timesteps and its own noise for L_mse.

The frozen prediction comes from the same UNet with its adapters disabled, computed *first*, under
``torch.no_grad()``: running it after the LoRA forward would re-toggle the adapters while gradient
checkpointing still has to recompute that forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .config import ROLLOUT_GRIDS, AcpoConfig
from .lora import adapters_disabled
from .rollout import estimate_x0

#: ``evaluator(images [N,3,H,W] in [0,1], prompts) -> [N]`` in [0, 1], differentiable in ``images``.
Evaluator = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


def is_conditional(unet: Any) -> bool:
    return type(unet).__name__ != "UNet2DModel"


class Context:
    """Text conditioning of one batch (None for unconditional UNets), computed without grad."""

    def __init__(self, pipe: Any, captions: Sequence[str], resolution: int, device: torch.device):
        self.kwargs: dict[str, Any] = {}
        if not is_conditional(pipe.unet):
            return
        from ..iqa_adapter.sampling import encode_prompts, is_sdxl

        with torch.no_grad():
            embeds = encode_prompts(pipe, list(captions), None, False, device)
        self.kwargs["encoder_hidden_states"] = embeds["prompt_embeds"]
        if is_sdxl(pipe):
            n = len(captions)
            time_ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float32)
            self.kwargs["added_cond_kwargs"] = {"text_embeds": embeds["pooled_prompt_embeds"],
                                                "time_ids": time_ids.expand(n, 6).to(device)}

    def __call__(self, unet: Any, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kwargs = {k: (v.to(x.dtype) if torch.is_tensor(v) else v) for k, v in self.kwargs.items()}
        return unet(x, t, **kwargs).sample


def decode(pipe: Any, latent: torch.Tensor) -> torch.Tensor:
    """D(x0): VAE decode (frozen, differentiable) or identity for pixel-space DDPM; returns [0, 1] images."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        image = latent
    else:
        z = latent / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        image = vae.decode(z.to(vae.dtype)).sample
    return (image.float() / 2 + 0.5).clamp(0, 1)


def encode(pipe: Any, pixels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training latents (VAE sample, scaled as the UNet sees them) or the pixels for pixel-space DDPM."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return pixels
    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator=g).float()
    latents = latents * vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        latents = latents - vae.config.shift_factor * vae.config.scaling_factor
    return latents


def _target(scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(latents, noise, t)


def step_losses(pipe: Any, unet: Any, evaluator: Evaluator, batch: Mapping[str, Any], config: AcpoConfig,
                g: torch.Generator, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """The ACPO loss of one batch, with every draw from ``g``; returns (total, terms incl. the timesteps)."""
    scheduler = pipe.scheduler
    base = getattr(unet, "module", unet)  # DDP wrapper -> the model itself for adapter toggling
    pixels = batch["pixel_values"].to(device, torch.float32)
    n = pixels.shape[0]
    latents = encode(pipe, pixels, g)
    rollout = config.x0_mode == "rollout"
    low = config.rollout_steps if rollout else 0  # t >= K: K distinct rollout steps
    t_max = min(config.t_max, scheduler.config.num_train_timesteps - 1)
    draws = 1 if rollout else n
    t = torch.randint(min(low, t_max), t_max + 1, (draws,), generator=g).repeat(n // draws).to(device)
    noise = torch.randn(latents.shape, generator=g).to(device)
    x_t = scheduler.add_noise(latents, noise, t)
    context = Context(pipe, batch["caption"], pixels.shape[-1], device)

    with torch.no_grad(), adapters_disabled(base):  # frozen first: see module docstring
        frozen = context(base, x_t, t).float()
    pred = context(unet, x_t, t).float()
    terms: dict[str, float] = {}
    if config.mse_window == "all":
        t_mse = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=g).to(device)
        noise_mse = torch.randn(latents.shape, generator=g).to(device)
        pred_mse = context(unet, scheduler.add_noise(latents, noise_mse, t_mse), t_mse).float()
        mse = F.mse_loss(pred_mse, _target(scheduler, latents, noise_mse, t_mse).float())
        terms.update(t_mse_max_drawn=float(t_mse.max()), t_mse_min_drawn=float(t_mse.min()))
    else:
        mse = F.mse_loss(pred, _target(scheduler, latents, noise, t).float())
    anchor = F.mse_loss(pred, frozen)
    x0 = estimate_x0(config.x0_mode, scheduler, lambda x, tt: context(unet, x, tt), x_t, t, pred,
                     config.rollout_steps, ROLLOUT_GRIDS[config.rollout_grid])
    quality = evaluator(decode(pipe, x0), list(batch["caption"]))
    q_loss = (1 - quality).mean()
    total = mse + config.lambda_anchor * anchor + config.lambda_q * q_loss
    terms.update(mse=mse.item(), anchor=anchor.item(), quality=q_loss.item(), total=total.item(),
                 t_max_drawn=float(t.max()), t_min_drawn=float(t.min()))
    return total, terms
