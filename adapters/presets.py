"""The built-in base generator presets: ``sdxl``, ``sd14``, ``sd15``, ``sd21``, ``diffusers:<id or folder>``, and the
offline ``tiny-sd`` / ``tiny-sdxl`` (random weights built in-process, see :mod:`iqabench.support.tiny_models`).

Each preset is a :class:`DiffusersGenerator` with its own source and defaults;
the defaults follow the model cards / the IQA-Adapter paper's settings.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from iqabench.contracts.generators import register_generator
from iqabench.contracts.options import Options
from iqabench.contracts.specs import GeneratorSpec, SpecError
from iqabench.execution.runtime import Runtime
from iqabench.support import tiny_models

from .diffusers_base import DiffusersGenerator
from .families import FLUX_DEV, FLUX_SCHNELL, PIXART, SD3, PipelineFamily
from .generator_options import FamilyHubOptions, FamilyTinyOptions, HubOptions, TinyOptions
from .hub_cache import HUB_ID, weights_status

# -- built-in generators -----------------------------------------------------------------------------------
#: The fingerprint's ``source`` of the tiny presets. It names the module the tiny models lived in before it
#: was renamed to :mod:`iqabench.support.tiny_models`; changing it would change every cached tiny image's key.
TINY_SOURCE_PREFIX = "iqabench.testing."


def _no_variant(spec: GeneratorSpec) -> None:
    if spec.variant is not None:
        raise SpecError(
            f"generator {spec.family!r} takes no ':{spec.variant}' part; set options in brackets, "
            f"e.g. {spec.family}[steps=20]"
        )


def _preset(family: str, description: str, *, source: str, options: type[Options], preset: dict[str, Any],
            weights: Callable[[], tuple[bool, str]] | None = None,
            tiny_builder: Callable[[int], Any] | None = None, pipeline_family: PipelineFamily | None = None) -> None:
    """Register ``family``: a DiffusersGenerator of ``source`` whose ``options`` start from ``preset`` (no
    ``:variant`` part); the listing shows the same defaults the generator starts from. ``pipeline_family``: what
    the preset is before its files are there (a wrapper it cannot carry is refused before any download)."""
    defaults = options.defaults(**preset)

    def factory(spec: GeneratorSpec, runtime: Runtime) -> DiffusersGenerator:
        _no_variant(spec)
        return DiffusersGenerator(spec, runtime, source=source, defaults=defaults, tiny_builder=tiny_builder,
                                  options=options, pipeline_family=pipeline_family)

    factory.__name__ = factory.__qualname__ = f"build_{family.replace('-', '_')}"
    register_generator(family, description=description, weights=weights, options=options,
                       option_defaults=preset)(factory)


#: Hub presets: (family, hub id, steps, pixel size, description); CFG 7.5 for all. sd14 is ACPO's base (its SD
#: experiments fine-tune SD v1.4), sampled with diffusers' defaults as sd15: the ACPO paper's own steps/CFG
#: could not be confirmed offline (docs/paper_settings.md).
_HUB_PRESETS = (
    ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", 35, 1024,
     "Stable Diffusion XL base 1.0 (35 steps, CFG 7.5, 1024 px, as in the IQA-Adapter paper)"),
    ("sd14", "CompVis/stable-diffusion-v1-4", 50, 512,
     "Stable Diffusion 1.4 (50 steps, CFG 7.5, 512 px: diffusers' defaults), the ACPO paper's base"),
    ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", 50, 512,
     "Stable Diffusion 1.5 (50 steps, CFG 7.5, 512 px: diffusers' defaults)"),
    ("sd21", "stabilityai/stable-diffusion-2-1", 50, 768, "Stable Diffusion 2.1 (50 steps, CFG 7.5, 768 px)"),
)
_TINY_PRESETS = (
    ("tiny-sd", tiny_models.tiny_sd_pipeline,
     "Tiny random SD-1.5-like pipeline for offline tests (64 px, 4 steps, CFG 7.5)"),
    ("tiny-sdxl", tiny_models.tiny_sdxl_pipeline,
     "Tiny random SDXL-like pipeline for offline tests (64 px, 4 steps, CFG 7.5)"),
)


def _register_presets() -> None:
    for family, source, steps, size, description in _HUB_PRESETS:
        sampling = {"steps": steps, "guidance_scale": 7.5, "height": size, "width": size}
        _preset(family, description, source=source, options=HubOptions, preset=sampling,
                weights=partial(weights_status, source))
    size = tiny_models.TINY_IMAGE_SIZE
    for family, builder, description in _TINY_PRESETS:
        sampling = {"steps": tiny_models.TINY_STEPS, "guidance_scale": 7.5, "height": size, "width": size}
        _preset(family, description, source=f"{TINY_SOURCE_PREFIX}{builder.__name__}", options=TinyOptions,
                preset=sampling, tiny_builder=builder)


_register_presets()

# -- issue 25: SD3.5, FLUX.1, PixArt-Sigma ----------------------------------------------------------------------
#: (family, hub id, pipeline family, sampling defaults, description): the model cards' / diffusers docs' settings
#: (docs/weights.md); the pipeline family is known without the files (IQA-Adapter over sd35 refused up front)
_MODERN_PRESETS = (
    ("sd35", "stabilityai/stable-diffusion-3.5-medium", SD3,
     {"steps": 40, "guidance_scale": 4.5, "height": 1024, "width": 1024},
     "Stable Diffusion 3.5 medium (40 steps, CFG 4.5, 1024 px: its model card)"),
    ("flux-dev", "black-forest-labs/FLUX.1-dev", FLUX_DEV,
     {"steps": 50, "guidance_scale": 3.5, "height": 1024, "width": 1024, "max_sequence_length": 512},
     "FLUX.1-dev (50 steps, embedded guidance 3.5, 1024 px, 512 T5 tokens: its model card)"),
    ("flux-schnell", "black-forest-labs/FLUX.1-schnell", FLUX_SCHNELL,
     {"steps": 4, "guidance_scale": 0.0, "height": 1024, "width": 1024, "max_sequence_length": 256},
     "FLUX.1-schnell (4 steps, guidance 0, 1024 px, 256 T5 tokens: diffusers' docs); no default baseline"),
    ("pixart-sigma", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", PIXART,
     {"steps": 20, "guidance_scale": 4.5, "height": 1024, "width": 1024, "use_resolution_binning": True},
     "PixArt-Sigma XL 1024 (20 steps, CFG 4.5, 1024 px, resolution binning: diffusers' defaults)"),
)
_MODERN_TINY = (
    ("tiny-sd3", "tiny_sd3_pipeline", {"guidance_scale": 4.5, "max_sequence_length": 32},
     "Tiny random SD3.5-like pipeline for offline tests (64 px, 4 steps, CFG 4.5, flow matching)"),
    ("tiny-flux", "tiny_flux_pipeline", {"guidance_scale": 3.5, "max_sequence_length": 32},
     "Tiny random FLUX.1-dev-like pipeline for offline tests (64 px, 4 steps, embedded guidance 3.5)"),
    ("tiny-flux-schnell", "tiny_flux_schnell_pipeline", {"guidance_scale": 0.0, "max_sequence_length": 32},
     "Tiny random FLUX.1-schnell-like pipeline for offline tests (64 px, 4 steps, no guidance input)"),
    ("tiny-pixart", "tiny_pixart_pipeline", {"guidance_scale": 4.5, "use_resolution_binning": False},
     "Tiny random PixArt-Sigma-like pipeline for offline tests (64 px, 4 steps, CFG 4.5, no resolution binning)"),
)


def _register_modern_presets() -> None:
    from iqabench.support import tiny_modern

    for family, source, pipeline_family, sampling, description in _MODERN_PRESETS:
        _preset(family, description, source=source, options=FamilyHubOptions, preset=sampling,
                weights=partial(weights_status, source), pipeline_family=pipeline_family)
    size = tiny_models.TINY_IMAGE_SIZE
    for family, name, sampling, description in _MODERN_TINY:
        preset = {"steps": tiny_models.TINY_STEPS, "height": size, "width": size, **sampling}
        _preset(family, description, source=f"iqabench.tiny_modern.{name}", options=FamilyTinyOptions,
                preset=preset, tiny_builder=getattr(tiny_modern, name))


_register_modern_presets()


def _any_pipeline_status() -> tuple[bool, str]:
    return True, "checked per spec: diffusers:<hub id> in the HF cache, or diffusers:<local folder>"


@register_generator("diffusers", description="Any diffusers text-to-image pipeline: diffusers:<hub id or folder>",
                    weights=_any_pipeline_status, options=FamilyHubOptions)
def build_any_pipeline(spec: GeneratorSpec, runtime: Runtime) -> DiffusersGenerator:
    """``diffusers:org/name`` (from the HF cache) or ``diffusers:/path/to/folder``; the pipeline's own defaults."""
    target = spec.variant
    if not target:
        raise SpecError("generator 'diffusers' needs a hub id or a folder: diffusers:org/name or diffusers:/path/dir")
    # the family options (FamilyHubOptions) are refused where the pipeline does not take them (.families)
    if HUB_ID.match(target) and not Path(target).expanduser().exists():
        return DiffusersGenerator(spec, runtime, source=target, options=FamilyHubOptions)
    if "path" in spec.options_dict:
        raise SpecError(f"generator {str(spec)!r} names its folder twice: use diffusers:/dir without path=")
    folder = str(Path(target).expanduser().resolve())
    generator = DiffusersGenerator(spec, runtime, source=folder, defaults=FamilyHubOptions.defaults(path=folder),
                                   options=FamilyHubOptions)
    generator.implied_options = frozenset({"path"})
    return generator
