"""The plugin file the out-of-memory tests load with ``--plugin``: tiny-sd on a pretend card that runs out of
memory above two images per call (a real ``torch.cuda.OutOfMemoryError``, raised on CPU)."""

from __future__ import annotations

import textwrap
from pathlib import Path

_SOURCE = '''
import torch
from iqabench.contracts.generators import register_generator
from iqabench.adapters.diffusers_base import DiffusersGenerator
from iqabench.support.tiny_models import tiny_sd_pipeline


class SmallCard(DiffusersGenerator):
    """tiny-sd on a pretend card that holds at most two images per call."""

    fingerprint_class = DiffusersGenerator.fingerprint_class  # same pixels as tiny-sd: share its keys

    def _call(self, batch, opts):
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return super()._call(batch, opts)


@register_generator(FAMILY, overwrite=True)
def build(spec, runtime):
    return SmallCard(spec, runtime, source="iqabench.testing.tiny_sd_pipeline",
                     defaults={"steps": STEPS, "guidance_scale": 7.5, "height": 64, "width": 64,
                               "negative_prompt": None, "seed": 0}, tiny_builder=tiny_sd_pipeline)
'''


def write_small_card_plugin(path: Path, family: str, *, steps: int) -> Path:
    """Write the plugin registering generator ``family`` (``steps`` sampling steps by default) at ``path``.

    Its images and keys are tiny-sd's (same fingerprint class and source), so a test can compare them with an
    unconstrained tiny-sd run.
    """
    path.write_text(f"FAMILY = {family!r}\nSTEPS = {int(steps)}\n" + textwrap.dedent(_SOURCE), encoding="utf-8")
    return path
