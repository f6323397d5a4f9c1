"""ACPO stage 2: LoRA fine-tuning of a diffusion UNet towards a bounded quality evaluator Q.

Each optimizer step draws t only from the late window t <= T_max and minimises

    L = L_mse + lambda_anchor * ||eps_lora(x_t, t, c) - eps_frozen(x_t, t, c)||^2
              + lambda_q * (1 - Q(D(x0)))

with gradients through the frozen decoder D and evaluator Q into the LoRA
weights only (base UNet, VAE, text encoders and Q are frozen). x0 comes from one
of two modes:

* ``one-step``: x0_hat = (x_t - sqrt(1 - abar_t) eps_lora) / sqrt(abar_t), from
  ``alphas_cumprod`` directly;
* ``rollout``: the LoRA model denoises the last K sampling steps inside the
  window (deterministic DDIM updates from t down to 0, K = ``rollout_steps``),
  gradients through all of them; the paper's ablation compares K = 1 and 10.

The frozen prediction comes from the same UNet with its adapters disabled,
computed *first*, under ``torch.no_grad()``, between ``disable_adapters`` and
``enable_adapters``: running it after the LoRA forward would re-toggle the
adapters while gradient checkpointing still has to recompute that forward.

Paper defaults: Adam, lr 2e-5, 1000 steps, T_max 100, lambda_q 0.1 (its SD
ablations; use 1.0 for DDPM). Unconditional pixel-space DDPM UNets
(``UNet2DModel``) are supported: no text, D is the identity.

Outputs in ``output_dir``: ``checkpoint-N/`` (LoRA, ``optimizer.pt`` holding
tensors only and read back with ``weights_only=True``, ``state.json``), and at
the end ``pytorch_lora_weights.safetensors`` + ``lora.json`` (with the base
spec and the config, what ``acpo:<output_dir>`` reads), ``losses.csv`` and the
loss curve ``loss_curve.png`` / ``.svg``. Every random draw of step k comes from
a generator seeded by (seed, k), so a resumed run draws what the uninterrupted
one would.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from iqabench import checkpoints

from .lora import LORA_FILE, adapters_disabled, add_lora, lora_parameters, save_lora

X0_MODES = ("one-step", "rollout")
TERMS = ("mse", "anchor", "quality", "total")

#: ``evaluator(images [N,3,H,W] in [0,1], prompts) -> [N]`` in [0, 1], differentiable in ``images``.
Evaluator = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


@dataclass
class AcpoConfig:
    output_dir: str
    max_steps: int = 1000
    learning_rate: float = 2e-5
    t_max: int = 100
    lambda_q: float = 0.1
    lambda_anchor: float = 1.0
    x0_mode: str = "one-step"
    rollout_steps: int = 10
    batch_size: int = 1
    rank: int = 4
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    gradient_checkpointing: bool = False
    save_every: int = 500
    resume: bool = True
    seed: int = 0
    progress: bool = True
    base: str | None = None  # generator spec of the base model, stored for ``acpo:<output_dir>``

    def __post_init__(self) -> None:
        if self.x0_mode not in X0_MODES:
            raise ValueError(f"x0_mode {self.x0_mode!r} is unknown: choose 'one-step' or 'rollout'")
        for name in ("max_steps", "t_max", "rollout_steps", "batch_size", "save_every", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lambda_q < 0 or self.lambda_anchor < 0:
            raise ValueError("lambda_q and lambda_anchor must be >= 0")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision {self.mixed_precision!r}: choose no, fp16 or bf16")


@dataclass
class AcpoResult:
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step of this run: TERMS + t
    checkpoint: Path | None = None
    output: Path | None = None
    resumed_from: int | None = None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    return checkpoints.latest_checkpoint(output_dir, (LORA_FILE, "state.json"))


# -- the model pieces -------------------------------------------------------------------------------------
def is_conditional(unet: Any) -> bool:
    return type(unet).__name__ != "UNet2DModel"


def prepare_for_training(pipe: Any, rank: int = 4) -> None:
    """Freeze every module of the pipeline and add a fresh LoRA to its UNet."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    add_lora(pipe.unet, rank)


def _alpha_bar(scheduler: Any, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    ab = scheduler.alphas_cumprod.to(like.device)[t.long()].to(torch.float32)
    return ab.reshape(-1, *([1] * (like.ndim - 1)))


def _eps_and_x0(pred: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor, prediction: str):
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


class _Context:
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


def _rollout_timesteps(t0: int, k: int) -> list[int]:
    """The last ``k`` sampling steps from t0 down to 0, evenly spaced, distinct, all <= t0."""
    points = torch.linspace(t0, 0, k + 1).round().long().tolist()[:-1]
    return sorted(set(points), reverse=True)


def step_losses(pipe: Any, unet: Any, evaluator: Evaluator, batch: Mapping[str, Any], config: AcpoConfig,
                g: torch.Generator, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """The ACPO loss of one batch, with every draw from ``g``; returns (total, terms incl. the timesteps)."""
    scheduler = pipe.scheduler
    prediction = scheduler.config.prediction_type
    base = getattr(unet, "module", unet)  # DDP wrapper -> the model itself for adapter toggling
    pixels = batch["pixel_values"].to(device, torch.float32)
    n = pixels.shape[0]
    with torch.no_grad():
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator=g).float()
            latents = latents * vae.config.scaling_factor
            if getattr(vae.config, "shift_factor", None):
                latents = latents - vae.config.shift_factor * vae.config.scaling_factor
        else:
            latents = pixels
    low = config.rollout_steps if config.x0_mode == "rollout" else 0  # t >= K: K distinct rollout steps
    t_max = min(config.t_max, scheduler.config.num_train_timesteps - 1)
    # rollout: one start per batch (a shared sampling schedule); one-step: one t per sample
    draws = 1 if config.x0_mode == "rollout" else n
    t = torch.randint(min(low, t_max), t_max + 1, (draws,), generator=g).repeat(n // draws).to(device)
    noise = torch.randn(latents.shape, generator=g).to(device)
    x_t = scheduler.add_noise(latents, noise, t)
    context = _Context(pipe, batch["caption"], pixels.shape[-1], device)

    with torch.no_grad(), adapters_disabled(base):  # frozen first: see module docstring
        frozen = context(base, x_t, t).float()
    pred = context(unet, x_t, t).float()
    target = noise if prediction == "epsilon" else scheduler.get_velocity(latents, noise, t)
    mse = F.mse_loss(pred, target.float())
    anchor = F.mse_loss(pred, frozen)

    ab = _alpha_bar(scheduler, t, x_t)
    eps, x0 = _eps_and_x0(pred, x_t, ab, prediction)
    if config.x0_mode == "rollout":
        times = _rollout_timesteps(int(t[0]), config.rollout_steps)  # times[0] == t: x_t and pred are step 0
        x = x_t
        for i, now in enumerate(times):
            t_now = torch.full_like(t, now)
            p = pred if i == 0 else context(unet, x, t_now).float()
            ab_now = _alpha_bar(scheduler, t_now, x)
            eps, x0 = _eps_and_x0(p, x, ab_now, prediction)
            if i + 1 < len(times):
                ab_next = _alpha_bar(scheduler, torch.full_like(t, times[i + 1]), x)
                x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    quality = evaluator(decode(pipe, x0), list(batch["caption"]))
    q_loss = (1 - quality).mean()
    total = mse + config.lambda_anchor * anchor + config.lambda_q * q_loss
    terms = {"mse": mse.item(), "anchor": anchor.item(), "quality": q_loss.item(), "total": total.item(),
             "t_max_drawn": float(t.max()), "t_min_drawn": float(t.min())}
    return total, terms


def _batch(dataset: Sequence[Mapping[str, Any]], size: int, g: torch.Generator) -> dict[str, Any]:
    index = torch.randint(0, len(dataset), (size,), generator=g).tolist()
    rows = [dataset[i] for i in index]
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "caption": [str(r.get("caption", "")) for r in rows]}


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


# -- training ---------------------------------------------------------------------------------------------
def train_acpo(pipe: Any, evaluator: Evaluator, dataset: Sequence[Mapping[str, Any]], config: AcpoConfig, *,
               accelerator: Any = None) -> AcpoResult:
    """Fine-tune a LoRA on ``pipe.unet`` (added now unless :func:`prepare_for_training` already did).

    ``dataset`` rows: ``pixel_values`` ([3, R, R] in [-1, 1]) and ``caption``.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if len(dataset) == 0:
        raise ValueError("the ACPO training set is empty")
    accelerator = accelerator or Accelerator(mixed_precision=config.mixed_precision)
    device = accelerator.device
    if not lora_parameters(pipe.unet):
        prepare_for_training(pipe, config.rank)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(device)
    if isinstance(evaluator, torch.nn.Module):
        evaluator.requires_grad_(False).eval()
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    unet = pipe.unet
    params = lora_parameters(unet)
    for p in params:
        p.data = p.data.float()  # train LoRA weights in fp32 even on a bf16 UNet
    leaked = [n for n, p in unet.named_parameters() if p.requires_grad and "lora_" not in n]
    if leaked:
        raise RuntimeError(f"base UNet parameters are trainable ({leaked[:3]}); only LoRA weights may train")
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    out = Path(config.output_dir)
    step, resumed_from, history = 0, None, []
    last = latest_checkpoint(out) if config.resume else None
    if last is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(unet, load_file(str(last / LORA_FILE)), adapter_name="default")
        optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location="cpu", weights_only=True))
        state = json.loads((last / "state.json").read_text())
        step = resumed_from = int(state["step"])
        history = list(state.get("history", []))
    unet.train()
    prepared, optimizer = accelerator.prepare(unet, optimizer)
    result = AcpoResult(step=step, resumed_from=resumed_from)
    bar = tqdm(total=config.max_steps, initial=step, desc="train acpo",
               disable=not (config.progress and accelerator.is_main_process))
    while step < config.max_steps:
        g = _step_generator(config.seed, step)
        batch = _batch(dataset, config.batch_size, g)
        with accelerator.autocast():
            loss, terms = step_losses(pipe, prepared, evaluator, batch, config, g, device)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        terms["step"] = step
        history.append(terms)
        result.history.append(terms)
        bar.set_postfix(mse=f"{terms['mse']:.4f}", anchor=f"{terms['anchor']:.2e}", q=f"{terms['quality']:.4f}")
        bar.update(1)
        if step % config.save_every == 0 or step == config.max_steps:
            result.checkpoint = _save_checkpoint(accelerator, unet, optimizer, out, step, history, config)
    bar.close()
    unet.eval()
    result.step = step
    if accelerator.is_main_process:
        result.output = save_lora(accelerator.unwrap_model(unet), out, _metadata(config, step))
        write_loss_curve(history, out)
    return result


def _metadata(config: AcpoConfig, step: int) -> dict[str, Any]:
    return {"base": config.base, "step": step, "acpo": asdict(config)}


def _save_checkpoint(accelerator, unet, optimizer, out: Path, step: int, history, config: AcpoConfig) -> Path:
    folder = out / f"checkpoint-{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_lora(accelerator.unwrap_model(unet), tmp, _metadata(config, step))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "history": history}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    accelerator.wait_for_everyone()
    return folder


def write_loss_curve(history: Sequence[Mapping[str, float]], out: str | Path) -> list[Path]:
    """``losses.csv`` and the loss curve (each term on its own axis, log scale where positive) as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["step", *TERMS]
    lines = [",".join(columns)] + [",".join(f"{row.get(c, float('nan'))}" for c in columns) for row in history]
    (out / "losses.csv").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, len(TERMS), figsize=(3.2 * len(TERMS), 2.8))
    steps = [row["step"] for row in history]
    for ax, term in zip(axes, TERMS, strict=True):
        values = [row[term] for row in history]
        ax.plot(steps, values, lw=1)
        ax.set_title(term)
        ax.set_xlabel("step")
        if values and min(values) > 0 and math.isfinite(max(values)):
            ax.set_yscale("log")
    fig.tight_layout()
    paths = [out / "loss_curve.png", out / "loss_curve.svg"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def evaluate_acpo(pipe: Any, evaluator: Evaluator, dataset: Sequence[Mapping[str, Any]], config: AcpoConfig, *,
                  seed: int = 1234, batches: int = 2) -> dict[str, float]:
    """Mean loss terms over fixed draws (seeded by ``seed``), without grad: a reproducible before/after number."""
    device = next(pipe.unet.parameters()).device
    sums: dict[str, float] = {}
    with torch.no_grad():
        for b in range(batches):
            g = _step_generator(seed, b)
            _, terms = step_losses(pipe, pipe.unet, evaluator, _batch(dataset, config.batch_size, g), config, g,
                                   device)
            for key in TERMS:
                sums[key] = sums.get(key, 0.0) + terms[key] / batches
    return sums
