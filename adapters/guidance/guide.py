"""Gradient IQA guidance (IQA-Adapter paper, Sec. 3.1) as a wrapper around a scheduler's ``step``.

**Formula (default, ``scaling="paper"``).** The paper's Sec. 3.1 formula, without sigma_t:

    eps_hat = eps(z_t | c) - alpha * omega(t) * grad_{z_t} log f(D(z_t))

**Sign.** The paper prints ``eps + alpha * omega(t) * grad log f(D(z_t))``. eps
is the *noise* prediction and the sampler moves the latent against it, so adding
the gradient would *lower* the score; the project subtracts it (tested: guided
images score higher, ``alpha < 0`` scores lower).

**Classifier-guidance scaling (``scaling="classifier"``).** Classifier guidance
(Dhariwal & Nichol 2021) adds the gradient to the score function ``-eps / sigma_t``,
which in eps terms multiplies it by sigma_t:

    eps_hat = eps(z_t | c) - alpha * omega(t) * sigma_t * grad_{z_t} log f(D(z_t))

That is *not* the paper's setting: with sigma_t, alpha = 30 acts like about 17 on
average over SDXL's 35-step Euler schedule and 24x weaker at the last step. It is
kept for those who want one alpha to mean the same on VP and VE schedulers.
With classifier-free guidance on, ``eps`` is the CFG-combined prediction the
pipeline hands to ``step``.

**Seam.** :func:`guided_scheduler` replaces ``scheduler.step`` on the instance
for the duration of a call and restores it afterwards. The scheduler object,
its class (pipelines test ``isinstance``), its config (``pipe.scheduler = x``
would rewrite the pipeline config) and the signature pipelines inspect for
``eta`` / ``generator`` (kept through ``functools.wraps``) stay as they were,
so one wrapper serves SD 1.5/2.1, SDXL and the tiny pipelines. With
``alpha == 0`` (and at the first step, where omega is 0) no gradient is
computed and eps is handed on untouched: bit-identical to the base model.

**The UNet output is a constant**: ``model_output`` is detached, gradients flow
through the VAE decoder and f only.

**Decode modes.** ``z`` decodes the (VP) latent z_t itself, the paper's formula;
``x0`` decodes the scheduler's predicted clean latent
``(z_t - sqrt(1 - abar) eps) / sqrt(abar)``, which the VAE was trained on and
so gives a better-conditioned gradient.

**Cheaper gradients (opt-in, not the paper's setting).** ``metric_size`` resizes
the decoded image (shorter side, aspect kept, antialiased bilinear, inside the
graph) before f: a metric trained on 384 px crops then runs at 384 px instead of
1024, forward and backward. ``decoder`` replaces the VAE for the gradient only,
e.g. a distilled tiny decoder (:mod:`.tiny_decoder`); the pipeline's final decode
is untouched. Both change the images, so both are in the cache key.

**Flow-matching (velocity) models (SD3, FLUX; issue 25).** With ``x_t = (1 - s) x0 + s eps`` and
``v = eps - x0`` (s: the scheduler's sigma), changing eps by d at fixed x_t changes x0 by ``-s d / (1 - s)``
and v by ``d / (1 - s)``. So the paper's eps_hat = eps - alpha*omega*g becomes

    v_hat = v - alpha * omega(t) * g / (1 - s)          (g = grad_{x_t} log f(D(.)); classifier: times s)

with ``x0_hat = x_t - s v`` for ``decode=x0``. FLUX hands the scheduler *packed* latents (2x2 patches as
tokens): ``unpack`` (set by the generator from diffusers' ``FluxPipeline._unpack_latents``) unpacks them,
inside the graph, before decoding. The paper's alpha = 30 is an SDXL eps value; on these models alpha is
calibrated per family (docs/guidance_acpo.md).

**log of a non-positive score.** f may return zero or negative numbers (a
lower-is-better metric, a z-score, an untrained net). We use the *safe log*

    slog(s) = log(s)                              for s >= floor
            = log(floor) + (s - floor) / floor    for s <  floor

its first-order continuation below ``floor`` (default 1e-2): exact log for the
positive scores the paper has in mind, continuous with a continuous slope,
strictly increasing everywhere, so the gradient keeps its direction and stays
finite. For a lower-is-better metric, f is read as 1/score: log f = -slog(score).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from iqabench.contracts.errors import UserInputError

from .schedule import noise_level, omega

DECODE_MODES = ("z", "x0")
#: ``paper``: eps - alpha*omega*grad (IQA-Adapter paper Sec. 3.1, no sigma_t); ``classifier``: times sigma_t.
SCALINGS = ("paper", "classifier")
PAPER_ALPHA = 30.0  # IQA-Adapter paper Sec. 3.1 / its SDXL experiments: alpha = 30


@dataclass(frozen=True)
class GuidanceConfig:
    """alpha: guidance strength (paper: 30 on SDXL); decode: ``z`` or ``x0``; floor: see :func:`safe_log`;
    metric_size: the decoded image's shorter side is resized to it (antialiased bilinear, aspect kept, inside
    the graph) before f, None keeps it; scaling: ``paper`` (no sigma_t, the default) or ``classifier``
    (times sigma_t, classifier-guidance scaling)."""

    alpha: float = PAPER_ALPHA
    decode: str = "z"
    floor: float = 1e-2
    metric_size: int | None = None
    scaling: str = "paper"

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise UserInputError(f"guidance decode {self.decode!r} is unknown: choose 'z' (decode z_t, the paper's "
                                 "formula) or 'x0' (decode the predicted clean latent)")
        if self.scaling not in SCALINGS:
            raise UserInputError(f"guidance scaling {self.scaling!r} is unknown: choose 'paper' (eps "
                                 f"- alpha*omega*grad, "
                                 "the paper's formula) or 'classifier' (times sigma_t, classifier-guidance scaling)")
        if not math.isfinite(self.alpha):
            raise UserInputError(f"guidance alpha must be a finite number, got {self.alpha!r}")
        if not self.floor > 0:
            raise UserInputError(f"guidance floor must be > 0, got {self.floor!r}")
        if self.metric_size is not None and self.metric_size < 8:
            raise UserInputError(f"metric_size must be at least 8 pixels, got {self.metric_size!r}")


def resize_shorter_side(image: torch.Tensor, side: int) -> torch.Tensor:
    """Shorter side to ``side``, aspect kept, antialiased bilinear (as torchvision's ``resize`` and pyiqa's
    test-time resize do): differentiable, and without the aliasing a plain 1024 -> 384 interpolation has."""
    h, w = image.shape[-2:]
    if min(h, w) == side:
        return image
    size = (side, max(1, round(w * side / h))) if h <= w else (max(1, round(h * side / w)), side)
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def safe_log(score: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """log(score) above ``floor``, its tangent line below (continuous, C1, increasing; see module docstring)."""
    floor_t = torch.as_tensor(floor, dtype=score.dtype, device=score.device)
    linear = torch.log(floor_t) + (score - floor_t) / floor_t
    above = score >= floor_t
    # where(), not clamp(): clamp's gradient is 0 at exactly the floor, where the slope must be 1/floor
    return torch.where(above, torch.log(torch.where(above, score, floor_t)), linear)


def log_quality(score: torch.Tensor, lower_better: bool, floor: float = 1e-2) -> torch.Tensor:
    """log f with f = score (higher is better) or 1/score (lower is better): increasing in quality either way."""
    value = safe_log(score, floor)
    return -value if lower_better else value


@dataclass
class StepRecord:
    index: int
    n: int
    omega: float
    sigma: float
    log_quality: float | None  # batch mean of log f at this step, None when no gradient was computed
    grad_norm: float | None


@dataclass
class IQAGuidance:
    """Turns the scheduler's eps (or v) into the guided one. ``metric`` is an ``iqabench.metrics.Metric``
    (or anything with ``raw(images)`` and ``lower_better``); ``vae`` is the pipeline's VAE; ``decoder``, when
    given, decodes for the gradient instead of it (an ``AutoencoderTiny``, or anything with ``decode`` and a
    ``config`` holding ``scaling_factor``)."""

    metric: Any
    vae: Any
    config: GuidanceConfig = field(default_factory=GuidanceConfig)
    trace: list[StepRecord] = field(default_factory=list)
    decoder: Any = None
    #: packed latents -> [B, C, h, w] before decoding (FLUX), or None
    unpack: Any = None

    def __post_init__(self) -> None:
        if self.decoder is not None:
            self._decoder = self.decoder
            return
        self._decoder = self.vae
        # The SDXL VAE gives NaNs in fp16 (its config says force_upcast): decode through an fp32 copy.
        # Casting the shared VAE back and forth instead would break the pipeline's own final decode.
        if self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self._decoder = copy.deepcopy(self.vae).to(torch.float32)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (scaled as the UNet sees it) -> image in [0, 1], differentiable, resized for f if asked.

        The VAE and a tiny decoder are called alike: diffusers pipelines decode ``latents / scaling_factor``
        (1.0 for ``AutoencoderTiny``, whose decoder takes the UNet's latents as they are) and get [-1, 1]."""
        vae = self._decoder
        cfg = vae.config
        if self.unpack is not None:
            latent = self.unpack(latent)
        latent = latent / cfg.scaling_factor
        if getattr(cfg, "shift_factor", None):
            latent = latent + cfg.shift_factor
        image = vae.decode(latent.to(vae.dtype)).sample.float()
        image = (image / 2 + 0.5).clamp(0, 1)
        if self.config.metric_size is not None:
            image = resize_shorter_side(image, self.config.metric_size)
        return image

    def guided_output(self, scheduler: Any, model_output: torch.Tensor, timestep: Any,
                      sample: torch.Tensor) -> torch.Tensor:
        """eps_hat (or the v that corresponds to it) for one ``scheduler.step`` call."""
        level = noise_level(scheduler, timestep)
        w = omega(level.index, level.n)
        if self.config.alpha == 0 or w == 0:
            self.trace.append(StepRecord(level.index, level.n, w, level.sigma, None, None))
            return model_output
        if level.flow:
            return self._guided_velocity(level, w, model_output, sample)
        prediction = getattr(scheduler.config, "prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"IQA guidance needs an epsilon or v_prediction model, not {prediction!r}")
        ab = level.alpha_bar
        sqrt_ab, sqrt_1mab = math.sqrt(ab), math.sqrt(1.0 - ab)
        with torch.enable_grad():
            # The leaf is the VP latent z_t itself, not the scheduler's sample: on Euler-style schedulers the
            # sample is z_t * sqrt(sigma^2 + 1), and a gradient taken w.r.t. it would carry an extra factor
            # sqrt(abar_t) (0.73 on average over SDXL's 35-step Euler schedule), off the paper's formula.
            vp = (sample.detach().float() * level.vp_scale).requires_grad_(True)
            out = model_output.detach().float()
            eps = out if prediction == "epsilon" else (sqrt_ab * out + sqrt_1mab * vp).detach()
            latent = vp if self.config.decode == "z" else (vp - sqrt_1mab * eps) / sqrt_ab
            logf = log_quality(self.metric.raw(self.decode(latent)).to(vp.device), self.metric.lower_better,
                               self.config.floor)
            (grad,) = torch.autograd.grad(logf.sum(), vp)  # grad_{z_t} log f(D(z_t))
        # classifier: the scheduler's sigma times the gradient w.r.t. its own sample, which is
        # sigma * vp_scale * grad_{z_t} = sqrt(1 - abar_t) * grad_{z_t} on VP and VE schedulers alike
        factor = level.sigma * level.vp_scale if self.config.scaling == "classifier" else 1.0
        delta = -self.config.alpha * w * factor * grad  # change of eps: against grad would lower quality
        if prediction == "v_prediction":
            delta = delta / sqrt_ab  # d v = d eps / sqrt(abar) at fixed z_t
        self.trace.append(StepRecord(level.index, level.n, w, level.sigma, float(logf.detach().mean()),
                                     float(grad.norm())))
        return (out + delta).to(model_output.dtype)

    def _guided_velocity(self, level: Any, w: float, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """v_hat for a flow-matching step (module docstring): the UNet/transformer output v is a constant."""
        s = level.sigma
        with torch.enable_grad():
            x_t = sample.detach().float().requires_grad_(True)
            v = model_output.detach().float()
            latent = x_t if self.config.decode == "z" else x_t - s * v
            logf = log_quality(self.metric.raw(self.decode(latent)).to(x_t.device), self.metric.lower_better,
                               self.config.floor)
            (grad,) = torch.autograd.grad(logf.sum(), x_t)  # grad_{x_t} log f(D(.))
        factor = s if self.config.scaling == "classifier" else 1.0
        delta = -self.config.alpha * w * factor * grad / max(1.0 - s, 1e-3)  # d v = d eps / (1 - s)
        self.trace.append(StepRecord(level.index, level.n, w, s, float(logf.detach().mean()), float(grad.norm())))
        return (v + delta).to(model_output.dtype)


@contextmanager
def guided_scheduler(scheduler: Any, guidance: IQAGuidance) -> Iterator[Any]:
    """Within the block, ``scheduler.step(eps, t, sample, ...)`` steps with the guided eps (see module docstring)."""
    if "step" in vars(scheduler):
        raise RuntimeError("this scheduler's step is already wrapped; nested IQA guidance is not supported")
    original = scheduler.step

    @functools.wraps(original)  # keeps the signature pipelines inspect for eta / generator
    def step(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        guided = guidance.guided_output(scheduler, model_output, timestep, sample)
        return original(guided, timestep, sample, *args, **kwargs)

    scheduler.step = step
    try:
        yield scheduler
    finally:
        del scheduler.step
