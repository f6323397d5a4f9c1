"""Plugin generators for the GPU measurement script (run.sh installs this as an entry point).

* ``gpu-sdxl`` / ``gpu-sd15``: aliases for the random-weight folders run.sh builds, i.e. the spec in
  $IQAB_SDXL_SPEC / $IQAB_SD15_SPEC (e.g. ``sdxl[path=/tmp/models/sdxl,steps=20]``) with the alias's own
  options applied on top (short names for the CLI smoke and the memory stages; the perf scripts take the
  folder specs themselves).
* ``rand-images[size=1024]``: smooth seeded random RGB images, no model: feeds the scoring benchmark.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from PIL import Image

from iqabench.contracts.generators import build_generator, register_generator
from iqabench.contracts.specs import GeneratorSpec, SpecError


def _alias(env: str):
    def factory(spec: GeneratorSpec, runtime):
        target = os.environ.get(env)
        if not target:
            raise SpecError(f"generator {spec.family!r} needs ${env} (a generator spec such as sdxl[path=/dir])")
        return build_generator(GeneratorSpec.parse(target).with_options(**spec.options_dict), runtime)

    return factory


build_gpu_sdxl = register_generator("gpu-sdxl", description="alias of $IQAB_SDXL_SPEC", overwrite=True)(
    _alias("IQAB_SDXL_SPEC"))
build_gpu_sd15 = register_generator("gpu-sd15", description="alias of $IQAB_SD15_SPEC", overwrite=True)(
    _alias("IQAB_SD15_SPEC"))


class RandomImages:
    """Smooth random images (low-resolution noise upsampled + fine grain), one per item seed."""

    def __init__(self, spec: GeneratorSpec, runtime):
        options = spec.options_dict
        unknown = set(options) - {"size"}
        if unknown:
            raise SpecError(f"rand-images: unknown options {sorted(unknown)}")
        self.size = int(options.get("size", 1024))
        self.spec = spec
        self.name = str(spec)
        self.runtime = runtime

    def fingerprint(self) -> dict[str, Any]:
        return {"class": "rand-images/v1", "size": self.size}

    def baseline(self) -> str | None:
        return None

    def generate_tensors(self, items):
        """uint8 [3, size, size] per item, made on the runtime's device (feeds in-memory scoring)."""
        device = self.runtime.torch_device
        out = []
        for item in items:
            g = torch.Generator().manual_seed(int(item.seed) * 7919 + sum(map(ord, item.prompt)) % 7919)
            low = torch.rand(1, 3, 24, 24, generator=g).to(device)
            x = torch.nn.functional.interpolate(low, size=(self.size, self.size), mode="bicubic", align_corners=False)
            grain = torch.randn(x.shape, generator=g).to(device)
            x = (x + 0.04 * grain).clamp(0, 1)
            out.append((x[0].float() * 255).round().to(torch.uint8))
        return out

    def generate(self, items):
        return [Image.fromarray(t.cpu().permute(1, 2, 0).numpy()) for t in self.generate_tensors(items)]


register_generator("rand-images", description="smooth random images, no model (scoring benchmarks)",
                   overwrite=True)(RandomImages)

