"""ACPO stage 2, the loop: LoRA fine-tuning of a diffusion UNet towards a bounded quality evaluator Q.

The pieces live by job: :mod:`.config` (settings and the paper's defaults), :mod:`.losses` (the loss of one
batch), :mod:`.rollout` (the x0 estimate), :mod:`.checkpoints` (``checkpoint-N/`` and resume),
:mod:`.plotting` (``losses.csv`` and the loss curve). This module runs the optimizer steps.

Only the LoRA weights train: base UNet, VAE, text encoders and Q are frozen and gradients flow through the
frozen decoder D and Q into the LoRA. Unconditional pixel-space DDPM UNets (``UNet2DModel``) are supported: no
text, D is the identity.

Outputs in ``output_dir``: ``checkpoint-N/``, and at the end ``pytorch_lora_weights.safetensors`` +
``lora.json`` (with the base spec and the config, what ``acpo:<output_dir>`` reads), ``losses.csv`` and
``loss_curve.png`` / ``.svg``. Every random draw of step k comes from a generator seeded by (seed, k), so a
resumed run draws what the uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iqabench.contracts.errors import UserInputError

from .checkpoints import latest_checkpoint, metadata, resume, save_checkpoint
from .config import X0_MODES, AcpoConfig
from .lora import add_lora, lora_parameters, save_lora
from .losses import Evaluator, decode, is_conditional, step_losses
from .plotting import TERMS, write_loss_curve

__all__ = ["X0_MODES", "TERMS", "AcpoConfig", "AcpoResult", "Evaluator", "decode", "evaluate_acpo",
           "is_conditional", "latest_checkpoint", "prepare_for_training", "step_losses", "train_acpo",
           "write_loss_curve"]


@dataclass
class AcpoResult:
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step of this run: TERMS + t
    checkpoint: Path | None = None
    output: Path | None = None
    resumed_from: int | None = None


def prepare_for_training(pipe: Any, rank: int = 4, targets: Sequence[str] | None = None) -> None:
    """Freeze every module of the pipeline and add a fresh LoRA to its UNet (default targets: every linear layer)."""
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    if targets is None:
        add_lora(pipe.unet, rank)
    else:
        add_lora(pipe.unet, rank, targets=targets)


def _batch(dataset: Sequence[Mapping[str, Any]], size: int, g: torch.Generator) -> dict[str, Any]:
    index = torch.randint(0, len(dataset), (size,), generator=g).tolist()
    rows = [dataset[i] for i in index]
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "caption": [str(r.get("caption", "")) for r in rows]}


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def train_acpo(pipe: Any, evaluator: Evaluator, dataset: Sequence[Mapping[str, Any]], config: AcpoConfig, *,
               accelerator: Any = None) -> AcpoResult:
    """Fine-tune a LoRA on ``pipe.unet`` (added now unless :func:`prepare_for_training` already did).

    ``dataset`` rows: ``pixel_values`` ([3, R, R] in [-1, 1]) and ``caption``.
    """
    from accelerate import Accelerator

    from iqabench.support.progress import ProgressBar

    if len(dataset) == 0:
        raise UserInputError("the ACPO training set is empty")
    accelerator = accelerator or Accelerator(mixed_precision=config.mixed_precision)
    device = accelerator.device
    if not lora_parameters(pipe.unet):
        prepare_for_training(pipe, config.rank, config.lora_targets)
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
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)  # Adam: the paper's optimizer
    out = Path(config.output_dir)
    step, resumed_from, history = 0, None, []
    last = latest_checkpoint(out) if config.resume else None
    if last is not None:
        step, history = resume(unet, optimizer, last)
        resumed_from = step
    unet.train()
    prepared, optimizer = accelerator.prepare(unet, optimizer)
    result = AcpoResult(step=step, resumed_from=resumed_from)
    bar = ProgressBar(total=config.max_steps, initial=step, desc="train acpo",
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
            result.checkpoint = save_checkpoint(accelerator, unet, optimizer, out, step, history, config)
    bar.close()
    unet.eval()
    result.step = step
    if accelerator.is_main_process:
        result.output = save_lora(accelerator.unwrap_model(unet), out, metadata(config, step))
        write_loss_curve(history, out)
    return result


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
