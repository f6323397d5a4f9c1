"""Validation of the options a diffusers generator spec may set (``steps``, ``guidance_scale``, size, ...).

Values are checked and normalised here (``guidance_scale=7`` -> 7.0) so that two
spellings of the same setting give the same fingerprint, hence the same cache keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from iqabench.options import Options, option
from iqabench.specs import GeneratorSpec, SpecError

#: Options an item's ``params`` may override for its own pipeline call.
GENERATION_OPTIONS = ("steps", "guidance_scale", "height", "width", "negative_prompt")


# -- option checking -----------------------------------------------------------------------------------
def check_value(key: str, value: Any, where: str) -> Any:
    """Validate and normalise one option value (e.g. ``guidance_scale=7`` -> 7.0, so the fingerprint is stable)."""
    def bad(expected: str) -> SpecError:
        return SpecError(f"{where}: option {key}={value!r} is invalid, expected {expected}")

    if key in ("steps", "seed"):
        low = 1 if key == "steps" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad(f"an integer >= {low}")
    elif key == "guidance_scale":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise bad("a number >= 0")
        value = float(value)
    elif key in ("height", "width"):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 8:
            raise bad("a positive multiple of 8 (pixels)")
    elif key == "negative_prompt":
        if not isinstance(value, str):
            raise bad("text")
    elif key == "true_cfg_scale":  # issue 25 family options (see FamilyOptions below)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            raise bad("a number >= 1 (1: true CFG off)")
        value = float(value)
    elif key == "max_sequence_length":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("an integer >= 1 (T5 tokens)")
    elif key == "use_resolution_binning":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif key in ("path", "revision", "variant"):
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
    return value


def unknown_option_message(key: str, known: Sequence[str], where: str, what: str) -> str:
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{where}: unknown {what} {key!r}.{hint} Known: {', '.join(sorted(known))}."


def canonical_params(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(sorted(params.items())), sort_keys=True, default=str)


def base_model_spec(base_spec: GeneratorSpec, options: Mapping[str, Any], base_options: Mapping[str, Any],
                    own_options: Collection[str], implied: Collection[str] = ()) -> str:
    """The base model's spec with the generation options it shares with a quality generator built on it.

    IQA-Adapter, gradient guidance and ACPO compare against their base model run
    with the same steps, CFG, size and negative prompt; their own options
    (target, alpha, LoRA path, ...) stay behind, and so do the options the base
    derives from its own spec (``implied``: the ``path`` of ``diffusers:<folder>``,
    which that spec refuses to be given twice).
    """
    keep = {k: v for k, v in options.items()
            if k in base_options and k not in own_options and k not in implied and v is not None}
    return str(GeneratorSpec(base_spec.family, base_spec.variant, tuple(sorted(keep.items()))))


# -- typed options of the base families --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GenerationOptions(Options):
    """What every diffusers generator takes (items may override these per image, see GENERATION_OPTIONS)."""

    steps: int | None = option(None, "denoising steps (None: the preset's / pipeline's default)")
    guidance_scale: float | None = option(None, "classifier-free guidance scale; <= 1 turns CFG off")
    height: int | None = option(None, "image height in pixels, a multiple of 8")
    width: int | None = option(None, "image width in pixels, a multiple of 8")
    negative_prompt: str | None = option(None, "negative prompt for the unconditional branch")

    def check(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                check_value(f.name, value, "option")


@dataclasses.dataclass(frozen=True)
class HubOptions(GenerationOptions):
    """A pipeline from the Hugging Face cache or a local folder."""

    path: str | None = option(None, "local folder with the pipeline (save_pretrained / hf download layout)")
    revision: str | None = option(None, "hub commit or branch in the local cache (not with path=)")
    variant: str | None = option(None, "weights variant, e.g. fp16 (loads *.fp16.safetensors)")


@dataclasses.dataclass(frozen=True)
class TinyOptions(GenerationOptions):
    """A tiny random pipeline built in-process (offline tests)."""

    seed: int = option(0, "seed of the random weights")


# -- issue 25: options only SD3 / FLUX / PixArt pipelines take (grouped here for the options-system port) ---------
@dataclasses.dataclass(frozen=True)
class FamilyOptions(Options):
    """Pipeline arguments of the SD3 / FLUX.1 / PixArt-Sigma families (refused on a family that lacks them)."""

    true_cfg_scale: float | None = option(None, "FLUX: real classifier-free guidance with negative_prompt when > 1 "
                                          "(guidance_scale is FLUX-dev's embedded guidance)")
    max_sequence_length: int | None = option(None, "SD3 / FLUX / PixArt: T5 prompt length in tokens")
    use_resolution_binning: bool | None = option(None, "PixArt: sample at the nearest trained resolution bin and "
                                                 "resize to height x width (the pipeline's default: true)")

    def check(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                check_value(f.name, value, "option")


@dataclasses.dataclass(frozen=True)
class FamilyHubOptions(FamilyOptions, HubOptions):
    """A pipeline from the Hugging Face cache or a local folder, with the SD3 / FLUX / PixArt options (listed last;
    ``check`` validates every field, the common ones included)."""


@dataclasses.dataclass(frozen=True)
class FamilyTinyOptions(FamilyOptions, TinyOptions):
    """A tiny random SD3 / FLUX / PixArt pipeline built in-process (offline tests)."""
