"""Training an IQA-Adapter on (image, caption, scores) triplets (supplementary Sec. 9).

Standard epsilon (or v) prediction loss; only the adapter's parameters train
(K'/V' initialised from each layer's K/V, plus the projection). The released
training defaults are kept: AdamW(lr 1e-4, betas 0.9/0.999, weight decay 1e-2),
condition dropout for CFG (quality alone 0.01, text alone 0.05, both 0.01;
"dropped quality" means the *encoded* input vector is zero), optional noise
offset, SDXL micro-conditioning (original size, crop top-left, target size) as
diffusers' SDXL training scripts pass it.

Runs under ``accelerate`` (``accelerate launch -m iqabench train iqa-adapter``
for multi-GPU / multi-node): the loader is sharded, gradients synced, and only
the main process writes checkpoints.

Determinism and resume: every random draw of an optimizer step (timesteps,
noise, dropout) comes from a generator seeded by (seed, step, micro-batch,
process), and the data order of an epoch from (seed, epoch). A run resumed from
``checkpoint-N`` therefore continues exactly as the uninterrupted run would.
Checkpoints: ``checkpoint-N/adapter.safetensors`` (released layout + metadata),
``optimizer.pt`` (tensors only, read back with ``weights_only=True``) and
``state.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqabench.contracts.errors import UserInputError
from iqabench.io import checkpoints

from .adapter import AdapterConfig, IQAAdapter
from .checkpoint import load_adapter, read_checkpoint, save_adapter
from .sampling import encode_prompts, is_sdxl


@dataclass
class TrainConfig:
    output_dir: str
    max_steps: int = 1000
    batch_size: int = 8  # per device: official train_iqa_adapter.py default (phase 1; phase 2 used 16)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4  # phase 1 (paper; official default); phase 2 fine-tunes at 1e-5 (see .phases)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    quality_drop: float = 0.01
    text_drop: float = 0.05
    both_drop: float = 0.01
    noise_offset: float = 0.0
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"; the paper's runs used bf16 (the CLI's "auto" picks it
    # where the GPU supports it, see .phases.resolve_mixed_precision; fp32 here keeps CPU runs exact)
    save_every: int = 1000
    keep_checkpoints: int | None = None
    resume: bool = True
    seed: int = 0
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.gradient_accumulation_steps < 1 or self.save_every < 1:
            raise UserInputError("max_steps, batch_size, gradient_accumulation_steps and save_every must be >= 1")
        drops = (self.quality_drop, self.text_drop, self.both_drop)
        if min(drops) < 0 or sum(drops) > 1:
            raise UserInputError(f"drop probabilities {drops} must be >= 0 and sum to at most 1")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserInputError(f"mixed_precision {self.mixed_precision!r}: choose no, fp16 or bf16")


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # per optimizer step, this run only
    checkpoint: Path | None = None
    resumed_from: int | None = None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    return checkpoints.latest_checkpoint(output_dir, ("adapter.safetensors", "state.json"))


class _Denoiser(nn.Module):
    """UNet + adapter as one module, so ``accelerator.prepare`` wraps it (DDP sees only trainable params)."""

    def __init__(self, adapter: IQAAdapter, unet: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.unet = unet

    def forward(self, noisy, timesteps, text, quality_input, added_cond_kwargs=None):
        tokens = self.adapter.projection(quality_input)
        context = torch.cat([text, tokens.to(text.dtype)], dim=1)
        return self.unet(noisy, timesteps, encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs).sample


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
        "caption": [r["caption"] for r in rows],
        "z": torch.stack([r["z"] for r in rows]),
        "original_size": torch.stack([r["original_size"] for r in rows]),
        "crop_top_left": torch.stack([r["crop_top_left"] for r in rows]),
    }


def build_adapter_for_training(pipe: Any, config: AdapterConfig, init_from: str | Path | None = None) -> IQAAdapter:
    """Freeze the base model, install a fresh adapter (K'/V' from K/V) or one loaded from ``init_from``."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    if init_from is not None:
        adapter = load_adapter(init_from, pipe.unet, metrics=config.metrics)
        adapter = _with_config(adapter, config)
    else:
        adapter = IQAAdapter(config, pipe.unet, init_from_base=True)
    adapter.float().requires_grad_(True)
    return adapter


def _with_config(adapter: IQAAdapter, config: AdapterConfig) -> IQAAdapter:
    adapter.config = config.with_updates(n_tokens=adapter.config.n_tokens, projection=adapter.config.projection)
    return adapter


def train_adapter(pipe: Any, adapter: IQAAdapter, dataset: torch.utils.data.Dataset, config: TrainConfig, *,
                  accelerator: Any = None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``adapter`` (already installed on ``pipe.unet``) for ``config.max_steps`` optimizer steps.

    ``dataset`` yields dicts with ``pixel_values`` ([3, R, R] in [-1, 1]),
    ``caption``, ``z`` (the z-scored metric vector), ``original_size`` and
    ``crop_top_left`` (for SDXL micro-conditioning); see
    :class:`iqabench.adapters.iqa_adapter.dataset.ScoredImageDataset`.
    """
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from iqabench.support.progress import ProgressBar

    accelerator = accelerator or Accelerator(mixed_precision=config.mixed_precision,
                                             gradient_accumulation_steps=config.gradient_accumulation_steps)
    out = Path(config.output_dir)
    device = accelerator.device
    unet, vae = pipe.unet, pipe.vae
    sdxl = is_sdxl(pipe)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    for module in (unet, vae, getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.to(device)
    vae.to(dtype=torch.float32)  # the SDXL VAE overflows in fp16; the released script keeps it fp32

    params = [p for p in adapter.parameters() if p.requires_grad]
    trainable = {id(p) for p in params}
    frozen_leak = [n for n, p in unet.named_parameters() if p.requires_grad and id(p) not in trainable]
    if frozen_leak:
        raise RuntimeError(f"base-model parameters are trainable ({frozen_leak[:3]}); call build_adapter_for_training")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.weight_decay)

    step, resumed_from = 0, None
    last = latest_checkpoint(out) if config.resume else None
    if last is not None:
        tensors, _ = read_checkpoint(last / "adapter.safetensors")
        adapter.load_released_state_dict(tensors)
        optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location="cpu", weights_only=True))
        step = resumed_from = int(json.loads((last / "state.json").read_text())["step"])

    denoiser = _Denoiser(adapter, unet)
    denoiser, optimizer = accelerator.prepare(denoiser, optimizer)
    n = len(dataset)
    per_process = config.batch_size * accelerator.num_processes
    if n < per_process:  # every batch would be a ragged end, dropped: the loop would never take a step
        raise UserInputError(f"the training set has {n} example(s), fewer than one batch of {per_process} "
                             f"(batch size {config.batch_size} x {accelerator.num_processes} process(es)); "
                             "lower --batch-size or add data")
    micro_per_epoch = n // per_process
    result = TrainResult(step=step, resumed_from=resumed_from)
    bar = ProgressBar(total=config.max_steps, initial=step, desc="train iqa-adapter",
                      disable=not (config.progress and accelerator.is_main_process))
    micro = step * config.gradient_accumulation_steps
    running = 0.0
    while step < config.max_steps:
        epoch, offset = divmod(micro, micro_per_epoch)
        order = _epoch_order(n, config.seed, epoch)
        start = (offset * per_process + accelerator.process_index * config.batch_size)
        indices = order[start:start + config.batch_size]
        if len(indices) < config.batch_size:  # drop the ragged end of an epoch (as drop_last)
            micro = (epoch + 1) * micro_per_epoch
            continue
        batch = _collate([dataset[i] for i in indices])
        g = torch.Generator().manual_seed(hash((config.seed, micro, accelerator.process_index)) % (2**63))
        with accelerator.accumulate(denoiser):
            loss = _loss(pipe, adapter, denoiser, vae, noise_scheduler, batch, config, g, device, sdxl)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        micro += 1
        running += float(accelerator.gather(loss.detach()[None]).mean()) / config.gradient_accumulation_steps
        if not accelerator.sync_gradients:
            continue
        step += 1
        result.losses.append(running)
        bar.set_postfix(loss=f"{running:.4f}")
        bar.update(1)
        if on_step is not None:
            on_step(step, running)
        running = 0.0
        if step % config.save_every == 0 or step == config.max_steps:
            result.checkpoint = _save(accelerator, adapter, optimizer, out, step, config)
    bar.close()
    result.step = step
    return result


def _loss(pipe, adapter, denoiser, vae, noise_scheduler, batch, config, g, device, sdxl) -> torch.Tensor:
    bsz = batch["pixel_values"].shape[0]
    draws = torch.rand(bsz, generator=g).tolist()
    q, t, b = config.quality_drop, config.text_drop, config.both_drop
    drop_quality = [r < q or (q + t) <= r < (q + t + b) for r in draws]
    drop_text = [(q <= r < q + t) or (q + t) <= r < (q + t + b) for r in draws]
    captions = ["" if d else c for c, d in zip(batch["caption"], drop_text, strict=True)]
    with torch.no_grad():
        pixels = batch["pixel_values"].to(device, torch.float32)
        latents = vae.encode(pixels).latent_dist.sample(generator=g)
        latents = latents * vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            latents = latents - vae.config.shift_factor * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g).to(device, latents.dtype)
        if config.noise_offset:
            noise = noise + config.noise_offset * torch.randn(latents.shape[:2] + (1, 1), generator=g).to(device)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=g).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        embeds = encode_prompts(pipe, captions, None, False, device)
        quality = adapter.encoding.encode(batch["z"].to(torch.float32)).to(device)
        keep = torch.tensor([not d for d in drop_quality], device=device, dtype=quality.dtype)[:, None]
        quality = quality * keep  # dropped -> the zero vector (exact: x * 0 for finite x)
        added = None
        if sdxl:
            res = pixels.shape[-1]
            target_size = torch.tensor([res, res]).expand(bsz, 2)
            time_ids = torch.cat([batch["original_size"], batch["crop_top_left"], target_size], dim=1)
            added = {"text_embeds": embeds["pooled_prompt_embeds"], "time_ids": time_ids.to(device, latents.dtype)}
    pred = denoiser(noisy, timesteps, embeds["prompt_embeds"], quality, added)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def _save(accelerator, adapter: IQAAdapter, optimizer, out: Path, step: int, config: TrainConfig) -> Path:
    folder = out / f"checkpoint-{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_adapter(adapter, tmp / "adapter.safetensors", step=step)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "train_config": asdict(config)}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        if config.keep_checkpoints:
            for _, old in checkpoints.checkpoint_folders(out)[:-config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def evaluation_loss(pipe: Any, adapter: IQAAdapter, dataset: torch.utils.data.Dataset, *, seed: int = 0,
                    batch_size: int = 8) -> float:
    """Denoising loss over the whole dataset with fixed noise and timesteps and no condition dropout.

    Training losses are too noisy (random t, random noise) to show a drop over a
    few steps; this fixed draw makes "the loss went down" a reproducible claim.
    """
    from diffusers import DDPMScheduler

    config = TrainConfig(output_dir=".", quality_drop=0.0, text_drop=0.0, both_drop=0.0)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    device = next(pipe.unet.parameters()).device
    denoiser = _Denoiser(adapter, pipe.unet)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = _collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
            g = torch.Generator().manual_seed(seed * 7919 + start)
            loss = _loss(pipe, adapter, denoiser, pipe.vae, noise_scheduler, batch, config, g, device, is_sdxl(pipe))
            n = batch["pixel_values"].shape[0]
            total, count = total + float(loss) * n, count + n
    return total / max(count, 1)
