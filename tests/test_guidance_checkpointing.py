"""Per-layer checkpointing of the guidance gradient (VAE decoder layers + metric blocks) changes no number."""

import copy

import torch
from torch import nn

from iqabench.adapters.guidance.checkpointing import checkpoint_guidance, decoder_layers, metric_layers
from iqabench.support.tiny_models import tiny_sd_pipeline


class SequentialMetric(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return torch.sigmoid(self.body(x).mean(dim=(1, 2, 3)))


def _gradient(vae, metric, latent):
    z = latent.clone().requires_grad_(True)
    image = (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    (grad,) = torch.autograd.grad(metric(image).log().sum(), z)
    return grad


def test_per_layer_checkpointing_gives_the_same_gradient_and_leaves_no_grad_calls_alone():
    vae = tiny_sd_pipeline(0).vae
    vae.enable_gradient_checkpointing()  # today's per-block checkpointing
    metric = SequentialMetric().eval()
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = _gradient(vae, metric, latent)
    with torch.no_grad():
        decoded = vae.decode(latent).sample

    vae2, metric2 = copy.deepcopy(vae), copy.deepcopy(metric)
    wrapped = checkpoint_guidance(vae2, metric2)
    assert wrapped == len(decoder_layers(vae2)) + len(metric_layers(metric2)) and len(metric_layers(metric2)) == 3
    assert not vae2.decoder.gradient_checkpointing  # replaced, not nested
    assert torch.equal(_gradient(vae2, metric2, latent), reference)
    with torch.no_grad():
        assert torch.equal(vae2.decode(latent).sample, decoded)  # the pipeline's final decode is untouched
    assert checkpoint_guidance(vae2, metric2) == 0  # idempotent


def test_guided_images_are_identical_for_every_checkpointing_mode():
    import pytest

    from iqabench.contracts.generators import WorkItem, build_generator
    from iqabench.contracts.specs import SpecError
    from iqabench.execution.runtime import Runtime
    from iqabench.metrics import register_metric

    register_metric("test_seq_metric", lower_better=False, overwrite=True)(lambda device: SequentialMetric())
    runtime = Runtime("cpu", "fp32", batch_size=1)
    items = [WorkItem("p", "a red cube", 0)]
    images = {}
    for mode in ("block", "layer", "off"):
        spec = f"guidance:test_seq_metric[base=tiny-sd,alpha=2000,steps=3,checkpointing={mode}]"
        generator = build_generator(spec, runtime)
        images[mode] = generator.generate_tensors(items)[0]
        assert generator.guidance().trace[-1].grad_norm > 0
    unguided = build_generator("tiny-sd[steps=3]", runtime).generate_tensors(items)[0]
    assert not torch.equal(images["block"], unguided)  # the gradient did something
    assert torch.equal(images["layer"], images["block"]) and torch.equal(images["off"], images["block"])
    fingerprints = [build_generator(f"guidance:test_seq_metric[base=tiny-sd,checkpointing={m}]", runtime).fingerprint()
                    for m in ("block", "layer")]
    assert fingerprints[0] == fingerprints[1]  # same pixels, same cache keys
    with pytest.raises(SpecError, match="checkpointing 'sometimes' is unknown"):
        build_generator("guidance:test_seq_metric[base=tiny-sd,checkpointing=sometimes]", runtime)
