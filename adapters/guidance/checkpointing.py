"""Fine-grained gradient checkpointing for the guidance gradient: same numbers, less memory.

The guidance gradient runs the VAE decoder (at 1024 px, the largest activations
of the whole sampler) and the metric with autograd on, once per step. diffusers'
own VAE checkpointing keeps the input of each *up block* and recomputes the
block in the backward pass, so the peak is one full-resolution block's worth of
activations (several GB at 1024 px). Checkpointing each *resnet and attention
layer* instead keeps only layer inputs, so the peak drops to one layer's
activations, for the same amount of recomputation (each layer's forward runs
twice either way). Inside the metric, each child of every ``nn.Sequential``
(the stages of ResNet / ConvNeXt / ViT backbones) is checkpointed the same way.

Recomputation is exact (the modules are deterministic in eval mode and
``torch.utils.checkpoint`` replays the RNG state), so the guided images are
bit-identical with and without it (``tests/test_guidance_checkpointing.py``).
Checkpointing is active only when autograd is recording: the pipeline's own
final decode under ``no_grad`` runs the modules unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_MARK = "_iqabench_checkpointed"


def checkpoint_modules(modules: Iterable[nn.Module]) -> int:
    """Make each module recompute its forward in the backward pass (only while grad is on); returns how many."""
    count = 0
    for module in modules:
        if getattr(module, _MARK, False):
            continue
        original = module.forward

        def forward(*args, _original=original, **kwargs):
            if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        module.forward = forward
        setattr(module, _MARK, True)
        count += 1
    return count


def decoder_layers(vae: nn.Module) -> list[nn.Module]:
    """The decoder's resnet and attention layers (diffusers ``ResnetBlock2D`` / ``Attention``; a tiny decoder's
    ``AutoencoderTinyBlock``)."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

    decoder = getattr(vae, "decoder", vae)
    return [m for m in decoder.modules() if isinstance(m, (ResnetBlock2D, Attention, AutoencoderTinyBlock))]


def metric_layers(module: nn.Module) -> list[nn.Module]:
    """Children with parameters of every ``nn.Sequential`` in the metric (backbone stages and blocks)."""
    layers = []
    for sequential in module.modules():
        if isinstance(sequential, nn.Sequential):
            layers.extend(child for child in sequential.children()
                          if any(True for _ in child.parameters()) and not isinstance(child, nn.Sequential))
    return layers


def checkpoint_guidance(vae: nn.Module, metric_module: nn.Module | None) -> int:
    """Per-layer checkpointing for the decoder (replacing diffusers' per-block checkpointing) and the metric."""
    decoder = getattr(vae, "decoder", None)
    if decoder is not None and getattr(decoder, "gradient_checkpointing", False):
        decoder.gradient_checkpointing = False  # per layer instead: nesting both would recompute twice
    count = checkpoint_modules(decoder_layers(vae))
    if metric_module is not None:
        count += checkpoint_modules(metric_layers(metric_module))
    return count

