"""Noise level sigma_t and the omega(t) ramp of gradient IQA guidance, per diffusers scheduler type.

The IQA-Adapter paper's formula (Sec. 3.1, the default ``scaling="paper"``) has
no sigma_t: ``eps_hat = eps - alpha * omega(t) * grad log f(D(z_t))``. Classifier
guidance proper adds the gradient of a log-likelihood to the *score*
grad log p(z_t); in eps terms the score is ``-eps / sigma_t``, so guiding eps
takes a factor sigma_t (Dhariwal & Nichol 2021, Alg. 2), the ``scaling="classifier"``
option:

    eps_hat = eps - alpha * omega(t) * sigma_t * grad_{z_t} log f(D(.))

sigma_t is what makes one alpha mean the same on every scheduler under that option:

* **VP schedulers** (DDPM, DDIM, PNDM, DPM-Solver, UniPC, ...): the sample is
  ``sqrt(abar) x0 + sqrt(1 - abar) eps``, so sigma_t = sqrt(1 - alphas_cumprod[t]).
* **VE / Karras schedulers** (Euler, Euler ancestral, Heun, KDPM2, LMS, ...):
  the sample the scheduler steps is ``x0 + sigma eps`` (the UNet sees it divided
  by sqrt(sigma^2 + 1)), so sigma_t is the scheduler's own sigma at this step.
  The equivalent VP quantities are abar = 1 / (1 + sigma^2) and the VP latent
  ``sample / sqrt(sigma^2 + 1)``.

A scheduler is VE when it has a ``sigmas`` table and an ``init_noise_sigma``
above 1 (DPM-Solver keeps a ``sigmas`` table too but samples in VP space with
``init_noise_sigma == 1``).

* **Flow-matching schedulers** (``FlowMatchEulerDiscreteScheduler``: SD3, FLUX; issue 25): the sample is
  ``x_t = (1 - s) x0 + s eps`` and the model predicts the velocity ``v = eps - x0``; ``sigma`` here is the
  scheduler's own ``s`` at this step (:mod:`.guide` turns the eps formula into one on v).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from iqabench.contracts.errors import UserError


class UnsupportedSchedulerError(UserError, TypeError):
    """The scheduler exposes neither ``alphas_cumprod`` nor a VE ``sigmas`` table."""


@dataclass(frozen=True)
class NoiseLevel:
    """Where one sampling step is: its index among ``n`` steps and the noise level of its sample."""

    index: int
    n: int
    sigma: float  # sigma_t of the guidance formula
    alpha_bar: float  # VP-equivalent alphas_cumprod at this step
    ve: bool  # the sample is x0 + sigma*eps (Euler-style) rather than VP
    flow: bool = False  # flow matching: the sample is (1 - sigma) x0 + sigma eps, the model predicts v

    @property
    def vp_scale(self) -> float:
        """Factor taking the scheduler's sample to the VP latent (1 for VP schedulers)."""
        return 1.0 / math.sqrt(self.sigma**2 + 1.0) if self.ve else 1.0


def is_ve(scheduler: Any) -> bool:
    sigmas = getattr(scheduler, "sigmas", None)
    init = getattr(scheduler, "init_noise_sigma", 1.0)
    return sigmas is not None and float(torch.as_tensor(init).max()) > 1.0


def is_flow(scheduler: Any) -> bool:
    """A flow-matching scheduler: diffusers' ``FlowMatch*`` classes (a sigma table in [0, 1], no alphas_cumprod)."""
    return type(scheduler).__name__.startswith("FlowMatch") and getattr(scheduler, "sigmas", None) is not None


def step_index(scheduler: Any, timestep: Any) -> int:
    """Position of ``timestep`` in the scheduler's current ``timesteps`` (the scheduler's own index when it has one).

    Euler-style schedulers track ``step_index`` themselves (None before their
    first ``step``); for the others the first matching timestep is used.
    """
    own = getattr(scheduler, "step_index", None)
    if isinstance(own, int):
        return own
    timesteps = torch.as_tensor(scheduler.timesteps)
    t = torch.as_tensor(timestep, dtype=timesteps.dtype).reshape(-1)[0].to(timesteps.device)
    matches = (timesteps == t).nonzero()
    if len(matches) == 0:
        raise ValueError(f"timestep {float(t)} is not among the scheduler's timesteps; call set_timesteps first")
    if len(matches) > 1 and getattr(scheduler, "begin_index", None) is None and is_ve(scheduler):
        return int(matches[1])  # diffusers' own rule for Euler-style schedulers with a repeated first timestep
    return int(matches[0])


def noise_level(scheduler: Any, timestep: Any) -> NoiseLevel:
    """sigma_t and the VP alpha-bar of the sample that ``scheduler.step(eps, timestep, sample)`` is about to move."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:
        raise ValueError("the scheduler has no timesteps yet; call set_timesteps first")
    index = step_index(scheduler, timestep)
    n = len(timesteps)
    if is_flow(scheduler):
        s = float(scheduler.sigmas[index])
        return NoiseLevel(index, n, s, (1.0 - s) ** 2 / ((1.0 - s) ** 2 + s**2), False, flow=True)
    if is_ve(scheduler):
        sigma = float(scheduler.sigmas[index])
        return NoiseLevel(index, n, sigma, 1.0 / (1.0 + sigma**2), True)
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None:
        has_sigmas = getattr(scheduler, "sigmas", None) is not None
        what = ("a sigma table, but its init_noise_sigma is 1 (not VE) and it is not a flow-matching scheduler"
                if has_sigmas else "no sigma table")
        raise UnsupportedSchedulerError(
            f"{type(scheduler).__name__} has no alphas_cumprod and {what}, so sigma_t is undefined; use a "
            "DDPM/DDIM-style, Euler-style or FlowMatch scheduler for IQA guidance")
    t = int(torch.as_tensor(timestep).reshape(-1)[0])
    alpha_bar = float(alphas[t])
    return NoiseLevel(index, n, math.sqrt(1.0 - alpha_bar), alpha_bar, False)


def omega(index: int, n: int) -> float:
    """The paper's ramp: 0 at the first sampling step, 1 at the last, linear between (1 for a single step)."""
    if n < 1 or not 0 <= index < n:
        raise ValueError(f"step index {index} is outside 0..{n - 1}")
    return 1.0 if n == 1 else index / (n - 1)
