"""Gradient IQA guidance: direction (both signs), exactness at alpha = 0, omega ramp, sigma_t per scheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from iqabench.adapters.guidance import (
    GuidanceConfig,
    IQAGuidance,
    guided_scheduler,
    log_quality,
    noise_level,
    omega,
    safe_log,
)
from iqabench.contracts.generators import WorkItem, build_generator
from iqabench.contracts.specs import SpecError
from iqabench.execution.runtime import Runtime
from iqabench.metrics import build_metric, register_metric
from iqabench.support.tiny_models import tiny_sd_pipeline, tiny_sdxl_pipeline


class Brightness(nn.Module):
    """A smooth, differentiable stand-in for a learned NR metric: mean pixel value plus ``offset``."""

    def __init__(self, offset: float = 0.5, sign: float = 1.0, expect_side: int | None = None):
        super().__init__()
        self.offset, self.sign, self.expect_side = offset, sign, expect_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expect_side is not None and x.shape[-1] != self.expect_side:
            raise AssertionError(f"metric got side {x.shape[-1]}, expected {self.expect_side}")
        return self.offset + self.sign * x.mean(dim=(1, 2, 3))


register_metric("test_bright", lower_better=False, overwrite=True)(lambda device: Brightness())
register_metric("test_dark", lower_better=True, overwrite=True)(lambda device: Brightness(1.5, -1.0))
register_metric("test_negative", lower_better=False, overwrite=True)(lambda device: Brightness(-2.0))
register_metric("test_sized", lower_better=False, overwrite=True)(lambda device: Brightness(expect_side=32))

RT = Runtime(device="cpu", dtype="fp32", batch_size=2)
ITEMS = [WorkItem("p0", "a photo of a cat", 0), WorkItem("p1", "a red car at night", 1)]
ALPHA = 20000  # the tiny random VAE has gradients ~1e-3 per latent; this moves brightness by ~1%



def brightness(images) -> np.ndarray:
    return np.array([np.asarray(im, dtype=np.float64).mean() / 255 for im in images])


def generate(spec: str):
    generator = build_generator(spec, RT)
    return generator, generator.generate(ITEMS)


# -- omega and sigma ----------------------------------------------------------------------------------
def test_omega_rises_linearly_from_zero_to_one():
    assert [omega(i, 4) for i in range(4)] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert omega(0, 1) == 1.0
    with pytest.raises(ValueError, match="outside"):
        omega(4, 4)


def test_sampling_applies_the_ramp_at_every_step():
    generator, _ = generate(f"guidance:test_bright[base=tiny-sd,alpha={ALPHA},steps=5]")
    trace = generator.guidance().trace
    assert [r.index for r in trace] == [0, 1, 2, 3, 4]
    assert [r.omega for r in trace] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert trace[0].grad_norm is None and all(r.grad_norm > 0 for r in trace[1:])  # omega 0: no gradient at all


@pytest.mark.parametrize("name", ["DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "PNDMScheduler"])
def test_sigma_is_sqrt_one_minus_alpha_bar_on_vp_schedulers(name):
    import diffusers

    scheduler = getattr(diffusers, name).from_config(tiny_sd_pipeline(0).scheduler.config)
    scheduler.set_timesteps(6)
    for index in (0, 3):
        t = scheduler.timesteps[index]
        level = noise_level(scheduler, t)
        expected = math.sqrt(1 - float(scheduler.alphas_cumprod[int(t)]))
        assert not level.ve and level.sigma == pytest.approx(expected) and level.index == index


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                                  "LMSDiscreteScheduler"])
def test_sigma_is_the_scheduler_sigma_on_euler_style_schedulers(name):
    import diffusers

    scheduler = getattr(diffusers, name).from_config(tiny_sdxl_pipeline(0).scheduler.config)
    scheduler.set_timesteps(6)
    for index in (0, 4):
        level = noise_level(scheduler, scheduler.timesteps[index])
        sigma = float(scheduler.sigmas[index])
        assert level.ve and level.index == index and level.sigma == pytest.approx(sigma)
        assert level.alpha_bar == pytest.approx(1 / (1 + sigma**2)) and sigma > 1 if index == 0 else True


# -- exactness ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["tiny-sd", "tiny-sdxl"])
def test_alpha_zero_reproduces_the_base_model_bit_for_bit(base):
    _, reference = generate(base)
    generator, images = generate(f"guidance:test_bright[base={base},alpha=0,decode=x0]")
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(reference, images, strict=True))
    assert generator.baseline() == f"{base}[guidance_scale=7.5,height=64,seed=0,steps=4,width=64]"
    assert build_generator(generator.baseline(), RT).fingerprint() == build_generator(base, RT).fingerprint()


def test_wrapper_with_alpha_zero_changes_nothing_even_on_an_ancestral_scheduler():
    """The wrapper keeps step()'s signature, so the pipeline still passes its generator to the ancestral noise."""
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = tiny_sdxl_pipeline(0)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)

    def run():
        generator = torch.Generator("cpu").manual_seed(3)
        return pipe("a cat", num_inference_steps=3, height=64, width=64, generator=generator,
                    output_type="np").images

    reference = run()
    guidance = IQAGuidance(build_metric("test_bright", RT, as_loss=True), pipe.vae, GuidanceConfig(alpha=0))
    with guided_scheduler(pipe.scheduler, guidance):
        assert "generator" in __import__("inspect").signature(pipe.scheduler.step).parameters
        wrapped = run()
    assert np.array_equal(reference, wrapped) and len(guidance.trace) == 3
    assert "step" not in vars(pipe.scheduler)  # the original method is back


# -- direction ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["tiny-sd", "tiny-sdxl"])  # DDIM (VP) and Euler (VE)
@pytest.mark.parametrize("variant", ["z", "x0"])
def test_guidance_raises_the_score_and_the_flipped_sign_lowers_it(base, variant):
    _, reference = generate(base)
    _, up = generate(f"guidance:test_bright[base={base},alpha={ALPHA},decode={variant}]")
    _, down = generate(f"guidance:test_bright[base={base},alpha={-ALPHA},decode={variant}]")
    base_score, up_score, down_score = brightness(reference), brightness(up), brightness(down)
    assert np.all(up_score > base_score + 2e-3), (base_score, up_score)
    assert np.all(down_score < base_score - 2e-3), (base_score, down_score)


def test_lower_is_better_metric_is_lowered():
    metric = build_metric("test_dark", RT)
    _, reference = generate("tiny-sd")
    _, guided = generate(f"guidance:test_dark[base=tiny-sd,alpha={ALPHA}]")

    def score(images):
        return metric.score(torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) / 255 for im in images]))

    assert torch.all(score(guided) < score(reference) - 2e-3)


def test_non_positive_scores_still_guide_upwards():
    """Scores near -1.5 fall in the safe log's linear part: slope 1/floor, direction unchanged."""
    _, reference = generate("tiny-sd")
    _, guided = generate("guidance:test_negative[base=tiny-sd,alpha=200]")
    assert np.all(brightness(guided) > brightness(reference) + 2e-3)


def test_safe_log_is_log_above_the_floor_and_its_tangent_below():
    s = torch.tensor([-3.0, -0.5, 0.0, 0.005, 0.01, 0.5, 4.0], requires_grad=True)
    value = safe_log(s, floor=0.01)
    assert value[4:].tolist() == pytest.approx(torch.log(s[4:]).tolist())
    assert value[0].item() == pytest.approx(math.log(0.01) + (-3.0 - 0.01) / 0.01)
    (grad,) = torch.autograd.grad(value.sum(), s)
    assert torch.all(torch.isfinite(value)) and torch.all(grad > 0)
    assert grad[:4].tolist() == pytest.approx([100.0] * 4) and grad[5].item() == pytest.approx(2.0)
    eps = 1e-6  # continuous with a continuous slope at the floor
    below, above = safe_log(torch.tensor([0.01 - eps, 0.01 + eps], dtype=torch.float64), floor=0.01)
    assert float(above - below) == pytest.approx(2 * eps / 0.01, rel=1e-3)
    assert torch.equal(log_quality(s, lower_better=True), -safe_log(s))


def test_v_prediction_gets_the_same_guidance_in_eps_terms():
    """At fixed z_t, eps = sqrt(abar) v + sqrt(1 - abar) z: the v we hand on must imply exactly eps_hat."""
    from diffusers import DDIMScheduler

    pipe = tiny_sd_pipeline(0)
    config = dict(pipe.scheduler.config)
    eps_sched = DDIMScheduler.from_config(config)
    v_sched = DDIMScheduler.from_config(config, prediction_type="v_prediction")
    for s in (eps_sched, v_sched):
        s.set_timesteps(4)
    t = eps_sched.timesteps[2]
    ab = float(eps_sched.alphas_cumprod[int(t)])
    torch.manual_seed(0)
    z, v = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    eps = math.sqrt(ab) * v + math.sqrt(1 - ab) * z
    guidance = IQAGuidance(build_metric("test_bright", RT, as_loss=True), pipe.vae, GuidanceConfig(alpha=ALPHA))
    eps_hat = guidance.guided_output(eps_sched, eps, t, z)
    v_hat = guidance.guided_output(v_sched, v, t, z)
    assert v_sched.config.prediction_type == "v_prediction" and not torch.allclose(eps_hat, eps)
    torch.testing.assert_close(math.sqrt(ab) * v_hat + math.sqrt(1 - ab) * z, eps_hat, atol=1e-5, rtol=1e-5)


def test_metric_input_is_resized_inside_the_graph():
    _, images = generate(f"guidance:test_sized[base=tiny-sd,alpha={ALPHA},metric_size=32]")
    assert images[0].size == (64, 64)  # the output keeps its size; only f saw 32 px (the metric asserts it)
    with pytest.raises(AssertionError, match="expected 32"):
        generate(f"guidance:test_sized[base=tiny-sd,alpha={ALPHA}]")


# -- specs ----------------------------------------------------------------------------------------------
def test_bad_specs_fail_with_one_sentence():
    with pytest.raises(SpecError, match="not a differentiable no-reference metric"):
        build_generator("guidance:piqe[base=tiny-sd]", RT)
    with pytest.raises(SpecError, match="decode .v. is unknown"):
        build_generator("guidance:test_bright[base=tiny-sd,decode=v]", RT)
    with pytest.raises(SpecError, match="needs a differentiable NR metric"):
        build_generator("guidance", RT)


def test_fingerprint_tracks_every_guidance_setting():
    fps = [build_generator(s, RT).fingerprint() for s in (
        "guidance:test_bright[base=tiny-sd]", "guidance:test_bright[base=tiny-sd,alpha=10]",
        "guidance:test_bright[base=tiny-sd,decode=x0]", "guidance:test_dark[base=tiny-sd]")]
    assert len({str(sorted(fp.items())) for fp in fps}) == 4
    assert fps[0]["alpha"] == 30.0 and fps[0]["tiny_seed"] == 0


# -- the formula against a hand computation (issue 16) ---------------------------------------------------
class _IdentityVAE(nn.Module):
    """D(z) = z (3 channels): with f = 0.5 + mean(D(z)/2 + 0.5), d log f / dz = 1 / (2 N f) per element."""

    class config:  # noqa: N801  (the attribute diffusers' VAEs carry)
        scaling_factor = 1.0
        shift_factor = None
        force_upcast = False

    dtype = torch.float32

    def decode(self, latent):
        class Out:
            sample = latent
        return Out()


class _Mean:
    lower_better = False

    def raw(self, images):
        return 0.5 + images.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("scaling", ["paper", "classifier"])
@pytest.mark.parametrize("scheduler_name", ["DDIMScheduler", "EulerDiscreteScheduler"])
def test_guided_eps_equals_the_hand_computed_formula(scaling, scheduler_name):
    """paper: eps - alpha*omega*grad_{z_t} log f on DDIM and Euler alike (z_t the VP latent, = sample /
    sqrt(sigma^2 + 1) on Euler); classifier: eps - alpha*omega*sigma*grad_{sample} log f (sigma = sqrt(1 - abar_t)
    on DDIM, the scheduler's sigma on Euler). grad by autograd w.r.t. z_t and by hand for D = identity."""
    import diffusers

    scheduler = getattr(diffusers, scheduler_name)(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                                   beta_start=0.00085, beta_end=0.012)
    scheduler.set_timesteps(5)
    index = 3
    timestep = scheduler.timesteps[index]
    if scheduler_name.startswith("Euler"):
        scheduler._step_index = index
    g = torch.Generator().manual_seed(0)
    sample = torch.rand(2, 3, 4, 4, generator=g) - 0.5
    eps = torch.randn(2, 3, 4, 4, generator=g)
    alpha = 7.0
    guidance = IQAGuidance(_Mean(), _IdentityVAE(), GuidanceConfig(alpha=alpha, scaling=scaling))
    got = guidance.guided_output(scheduler, eps, timestep, sample)

    w = index / (5 - 1)  # omega: 0 at the first step, 1 at the last
    if scheduler_name.startswith("Euler"):
        sigma = float(scheduler.sigmas[index])
        vp_scale = 1 / math.sqrt(sigma**2 + 1)  # z_t of the VP formula = sample / sqrt(sigma^2 + 1)
    else:
        sigma = math.sqrt(1 - float(scheduler.alphas_cumprod[int(timestep)]))
        vp_scale = 1.0
    n = 3 * 4 * 4
    z_t = sample * vp_scale
    # grad_{z_t} log f(D(z_t)) by autograd on the paper's variable z_t, independently of the wrapper
    z_leaf = z_t.clone().requires_grad_(True)
    torch.log(0.5 + (z_leaf / 2 + 0.5).mean(dim=(1, 2, 3))).sum().backward()
    grad_z = z_leaf.grad
    # ...and by hand: d/dz log(0.5 + mean(z/2 + 0.5)) = 1 / (2 n f)
    f = 0.5 + (z_t / 2 + 0.5).mean(dim=(1, 2, 3))
    torch.testing.assert_close(grad_z, (1 / (2 * n * f))[:, None, None, None].expand_as(sample))
    if scaling == "classifier":
        # eps - alpha*omega*sigma*grad_{sample}; grad_{sample} = vp_scale * grad_{z_t}, sigma*vp_scale = sqrt(1-abar)
        expected = eps - alpha * w * sigma * vp_scale * grad_z
    else:  # the paper: eps - alpha*omega*grad_{z_t} log f, no factor on DDIM or Euler
        expected = eps - alpha * w * grad_z
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got, eps)


def test_the_default_is_the_papers_formula_and_alpha():
    from iqabench.adapters.guidance.guide import PAPER_ALPHA

    config = GuidanceConfig()
    assert config.scaling == "paper" and config.alpha == PAPER_ALPHA == 30.0 and config.decode == "z"
    with pytest.raises(ValueError, match="scaling 'sigma' is unknown"):
        GuidanceConfig(scaling="sigma")
