"""What a diffusers pipeline family means for benchmarking: its baseline, its options, what can wrap it (issue 25).

SD 1.x/2.x/SDXL, SD3/3.5, FLUX.1 and PixArt-Sigma differ in ways that silently change what a comparison
means, so each difference is written down once, here, and read by :class:`.diffusers_base.DiffusersGenerator`:

* **guidance** — ``cfg``: ``guidance_scale`` is classifier-free guidance, <= 1 turns it off (SD, SDXL, SD3,
  PixArt: diffusers skips the unconditional branch); ``embedded``: FLUX.1-dev was distilled from CFG and takes
  ``guidance_scale`` as an *input* of the transformer, so 1.0 is "low embedded guidance", not "no CFG" (it runs
  no CFG at any value; ``true_cfg_scale > 1`` with a negative prompt runs real CFG); ``distilled``:
  FLUX.1-schnell has no guidance input at all, ``guidance_scale`` changes nothing.
* **unet** — IQA-Adapter and ACPO act on a UNet's cross-attention layers; SD3 and FLUX use joint attention in
  a transformer and PixArt cross-attends inside a transformer, none has ``pipe.unet``.
* **options** — the ``pipeline(...)`` arguments only that family takes (``true_cfg_scale``,
  ``max_sequence_length``, ``use_resolution_binning``).
* **tiny_decoder** — the distilled decoder of its latent space, for guidance's ``decoder=tiny``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PipelineFamily:
    name: str
    label: str  # how a sentence names it
    guidance: str  # cfg | embedded | distilled (module docstring)
    unet: bool  # has pipe.unet with cross-attention (IQA-Adapter, ACPO)
    options: frozenset[str]  # family-only pipeline arguments it accepts
    tiny_decoder: str | None  # hub id of the distilled decoder of its latent space
    flow: bool = False  # flow matching (velocity prediction, x_t = (1 - s) x0 + s eps)
    packed_latents: bool = False  # FLUX: 2x2 patches packed into tokens; unpack before decoding

    @property
    def is_legacy(self) -> bool:
        """SD 1.x/2.x/SDXL, and any other pipeline: fingerprinted as before issue 25 (their keys stay as they were)."""
        return self.name in ("sd", "other")


SD = PipelineFamily("sd", "Stable Diffusion (UNet) pipeline", "cfg", True, frozenset(), None)
SD3 = PipelineFamily("sd3", "Stable Diffusion 3 pipeline (joint-attention transformer, no UNet)", "cfg", False,
                     frozenset({"max_sequence_length"}), "madebyollin/taesd3", flow=True)
FLUX_DEV = PipelineFamily("flux-dev", "FLUX.1-dev-like pipeline (joint-attention transformer with a guidance "
                          "embedding, no UNet)", "embedded", False,
                          frozenset({"true_cfg_scale", "max_sequence_length"}), "madebyollin/taef1", flow=True,
                          packed_latents=True)
FLUX_SCHNELL = PipelineFamily("flux-schnell", "FLUX.1-schnell-like pipeline (guidance-distilled joint-attention "
                              "transformer, no UNet)", "distilled", False,
                              frozenset({"true_cfg_scale", "max_sequence_length"}), "madebyollin/taef1", flow=True,
                              packed_latents=True)
PIXART = PipelineFamily("pixart", "PixArt pipeline (cross-attention inside a transformer, no UNet)", "cfg", False,
                        frozenset({"max_sequence_length", "use_resolution_binning"}), "madebyollin/taesdxl")

#: Any other pipeline without a UNet (Sana, AuraFlow, ...): CFG as SD's, nothing a UNet method can attach to
OTHER_NO_UNET = PipelineFamily("other", "pipeline without a UNet (its model_index.json names no 'unet')", "cfg", False,
                               frozenset(), None)

#: The options only some families take; a spec that sets one on a family without it is refused.
FAMILY_OPTIONS = ("true_cfg_scale", "max_sequence_length", "use_resolution_binning")


def family_of(pipeline_class: str, transformer_config: dict[str, Any] | None = None,
              model_index: dict[str, Any] | None = None) -> PipelineFamily:
    """The family of a pipeline class name (``model_index.json``'s ``_class_name``); for anything else, SD when
    ``model_index`` names a ``unet`` component (or is not known), else :data:`OTHER_NO_UNET`."""
    if pipeline_class.startswith("StableDiffusion3"):
        return SD3
    if pipeline_class.startswith("Flux"):
        embeds = (transformer_config or {}).get("guidance_embeds", True)
        return FLUX_DEV if embeds else FLUX_SCHNELL
    if pipeline_class.startswith("PixArt"):
        return PIXART
    if model_index is not None and "unet" not in model_index:
        return OTHER_NO_UNET
    return SD


def read_transformer_config(folder: Path) -> dict[str, Any] | None:
    """``transformer/config.json`` of a pipeline folder (read as JSON), or None where there is none."""
    path = Path(folder) / "transformer" / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# -- PixArt resolution binning -----------------------------------------------------------------------------
def pixart_sampled_size(sample_size: int, height: int, width: int) -> tuple[int, int] | None:
    """The (height, width) PixArt-Sigma really samples at with ``use_resolution_binning`` (it then resizes to the
    asked size); None where diffusers has no bins for this transformer ``sample_size`` (it raises then)."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN,
        ASPECT_RATIO_512_BIN,
        ASPECT_RATIO_1024_BIN,
    )
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

    bins = {256: ASPECT_RATIO_2048_BIN, 128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN,
            32: ASPECT_RATIO_256_BIN}.get(int(sample_size))
    if bins is None:
        return None
    from diffusers.image_processor import PixArtImageProcessor

    return PixArtImageProcessor.classify_height_width_bin(int(height), int(width), ratios=bins)


def caption_cleaning() -> dict[str, Any]:
    """Whether PixArt's caption cleaning runs here: diffusers turns ``clean_caption`` off, with a log line, when
    bs4 or ftfy is missing, so the same prompt gives other images on another machine (fingerprinted)."""
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for module, dist in (("bs4", "beautifulsoup4"), ("ftfy", "ftfy")):
        try:
            libs[module] = version(dist)
        except PackageNotFoundError:
            libs[module] = None
    return {"clean_caption": all(libs.values()), "caption_libs": libs}


# -- what a DiffusersGenerator asks of its family --------------------------------------------------------------
def resolve_family(tiny_builder: Any, location: Any,
                   known: PipelineFamily | None = None) -> tuple[PipelineFamily, dict[str, Any] | None]:
    """(family, transformer config) of a generator's pipeline, from its tiny builder or its files' metadata;
    ``known`` (a preset's family) stands in while the files are missing, so what cannot run on it is refused
    before the preflight offers to download them."""
    if tiny_builder is not None:
        from iqabench.support import tiny_modern

        name = tiny_modern.PIPELINE_CLASS.get(tiny_builder)
        if name is None:
            return SD, None
        config = {"guidance_embeds": tiny_builder is tiny_modern.tiny_flux_pipeline,
                  "sample_size": tiny_modern.PIXART_SAMPLE_SIZE}
        return family_of(name, config), config
    if location is None:
        return known or SD, None
    config = read_transformer_config(location.folder)
    index = location.model_index
    return family_of(str(index.get("_class_name", "")), config, index), config


def family_settings(family: PipelineFamily, options: dict[str, Any], user_options: set[str],
                    transformer_config: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Refuse options the family does not take, warn about options that do nothing on it, and return what
    changes its pixels beyond the common options (for the fingerprint): one sentence per problem."""
    import warnings

    from iqabench.contracts.specs import SpecError

    for key in FAMILY_OPTIONS:
        if options.get(key) is not None and key not in family.options:
            raise SpecError(f"{where}: option {key}= has no meaning for a {family.label}; it is taken by "
                            + {"true_cfg_scale": "FLUX pipelines", "max_sequence_length": "SD3, FLUX and PixArt "
                               "pipelines", "use_resolution_binning": "PixArt pipelines"}[key])
    if family.is_legacy:
        return {}
    true_cfg = (options.get("true_cfg_scale") or 1.0) > 1.0
    if true_cfg and options.get("negative_prompt") is None:  # diffusers runs true CFG only with both
        warnings.warn(f"{where}: true_cfg_scale has no effect without negative_prompt (FLUX runs true CFG only when "
                      "true_cfg_scale > 1 and a negative prompt is given)", UserWarning, stacklevel=3)
    if family.guidance != "cfg" and options.get("negative_prompt") is not None and not true_cfg:
        warnings.warn(f"{where}: negative_prompt has no effect on a {family.label} unless true_cfg_scale > 1 "
                      "(it runs no classifier-free guidance otherwise)", UserWarning, stacklevel=3)
    if family.guidance == "distilled" and "guidance_scale" in user_options and options.get("guidance_scale"):
        warnings.warn(f"{where}: guidance_scale has no effect on a {family.label} (it has no guidance input)",
                      UserWarning, stacklevel=3)
    settings: dict[str, Any] = {"family": family.name}
    for key in sorted(family.options):
        settings[key] = options.get(key)
    if family.name == "pixart":
        settings.update(_pixart_settings(options, transformer_config or {}, where))
    return settings


def _pixart_settings(options: dict[str, Any], config: dict[str, Any], where: str) -> dict[str, Any]:
    """PixArt's caption cleaning state and the resolution it really samples at (never resized silently)."""
    import warnings

    from iqabench.contracts.specs import SpecError

    out = caption_cleaning()
    binning = options.get("use_resolution_binning")
    binning = True if binning is None else binning  # the pipeline's default
    height, width = options.get("height"), options.get("width")
    sample_size = int(config.get("sample_size", 128))
    if binning and height and width:
        sampled = pixart_sampled_size(sample_size, height, width)
        if sampled is None:
            raise SpecError(f"{where}: this PixArt transformer (sample_size {sample_size}) has no resolution bins "
                            "in diffusers, so use_resolution_binning cannot run; pass use_resolution_binning=false")
        if sampled != (height, width):
            warnings.warn(f"{where}: PixArt samples at {sampled[0]}x{sampled[1]} (its nearest resolution bin) and "
                          f"resizes to the asked {height}x{width}; pass use_resolution_binning=false to sample at "
                          f"{height}x{width}", UserWarning, stacklevel=4)
        out["sampled_size"] = list(sampled)
    out["use_resolution_binning"] = binning
    return out


def runs_true_cfg(options: dict[str, Any]) -> bool:
    """Whether FLUX runs true CFG: diffusers needs ``true_cfg_scale > 1`` *and* a negative prompt."""
    return (options.get("true_cfg_scale") or 1.0) > 1.0 and options.get("negative_prompt") is not None


def family_baseline(family: PipelineFamily, spec: Any, options: dict[str, Any]) -> tuple[str | None, str | None]:
    """(baseline spec, note): "the same model without guidance" as it means something for this family."""
    if family.guidance == "distilled":
        return None, (f"{spec} is a {family.label}: guidance_scale changes nothing and it runs no CFG, so it has "
                      "no 'same model without guidance'; pass --baseline SPEC (e.g. another step count or model)")
    if runs_true_cfg(options):
        return str(spec.with_options(true_cfg_scale=1.0)), "baseline: the same FLUX model with true CFG off"
    if options.get("guidance_scale") == 1.0:
        return None, None
    baseline = str(spec.with_options(guidance_scale=1.0))
    if family.guidance == "embedded":
        return baseline, (f"baseline of {spec}: embedded guidance 1.0 (FLUX-dev's guidance_scale is an input of "
                          "the distilled model, not CFG; it runs no CFG either way)")
    return baseline, None
