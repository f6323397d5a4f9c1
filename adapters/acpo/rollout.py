"""The x0 estimate ACPO scores: one step from eps, or the LoRA model's own rollout over the last K steps.

* ``one-step``: x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), from ``alphas_cumprod`` directly.
* ``rollout`` (the paper's, Table 8 picks K = 10): the LoRA model progressively denoises from t to 0 with
  deterministic DDIM updates over K evenly spaced steps, gradients through all of them, so the evaluator sees
  what sampling would produce rather than a blurry one-step guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def alpha_bar(scheduler: Any, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod[t] shaped to broadcast against ``like``, in float32."""
    ab = scheduler.alphas_cumprod.to(like.device)[t.long()].to(torch.float32)
    return ab.reshape(-1, *([1] * (like.ndim - 1)))


def eps_and_x0(pred: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor, prediction: str):
    """(eps, x0_hat) from the UNet output for epsilon or v prediction, at noise level abar."""
    pred = pred.float()
    if prediction == "epsilon":
        eps = pred
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    elif prediction == "v_prediction":
        x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * pred
        eps = ab.sqrt() * pred + (1 - ab).sqrt() * x_t
    else:
        raise ValueError(f"ACPO needs an epsilon or v_prediction model, not {prediction!r}")
    return eps, x0


def rollout_timesteps(t0: int, k: int, sampler_steps: int | None = None, train_steps: int = 1000) -> list[int]:
    """The last ``k`` sampling steps from t0 down to 0, distinct, all <= t0: evenly spaced (``sampler_steps``
    None), or t0 then the ``sampler_steps``-step DDIM grid's timesteps below it (spacing train_steps //
    sampler_steps), the first ``k`` of them."""
    if sampler_steps is None:
        points = torch.linspace(t0, 0, k + 1).round().long().tolist()[:-1]
        return sorted(set(points), reverse=True)
    spacing = max(1, train_steps // sampler_steps)
    grid = [t for t in range(0, train_steps, spacing) if t < t0]
    return [t0, *sorted(grid, reverse=True)][:k]


def estimate_x0(mode: str, scheduler: Any, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor, steps: int,
                sampler_steps: int | None = None) -> torch.Tensor:
    """x0_hat for ``mode``; ``pred`` is the LoRA output at (x_t, t), reused as the rollout's first step.

    ``predict(x, t)`` runs the LoRA UNet (with the batch's conditioning). Rollout needs one shared start t per
    batch (the sampling schedule is shared).
    """
    prediction = scheduler.config.prediction_type
    _, x0 = eps_and_x0(pred, x_t, alpha_bar(scheduler, t, x_t), prediction)
    if mode == "one-step":
        return x0
    times = rollout_timesteps(int(t[0]), steps, sampler_steps,  # times[0] == t: x_t and pred are step 0
                              int(scheduler.config.num_train_timesteps))
    x = x_t
    for i, now in enumerate(times):
        t_now = torch.full_like(t, now)
        p = pred if i == 0 else predict(x, t_now).float()
        eps, x0 = eps_and_x0(p, x, alpha_bar(scheduler, t_now, x), prediction)
        if i + 1 < len(times):
            ab_next = alpha_bar(scheduler, torch.full_like(t, times[i + 1]), x)
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    return x0
