"""The options a diffusers generator spec may set (``steps``, ``guidance_scale``, size, ...), as typed fields.

Each field of :class:`GenerationOptions` / :class:`HubOptions` / :class:`TinyOptions` declares one option
completely (see :mod:`iqabench.contracts.options`): its rule checks and normalises a value (``guidance_scale=7`` -> 7.0,
so two spellings of one setting give one fingerprint, hence one cache key), its pipeline argument, whether
items may override it and whether it is fingerprinted. :class:`~.diffusers_base.DiffusersGenerator` iterates
over the fields; adding an option is adding a field, here (every pipeline) or in a family's subclass of
:class:`HubOptions` passed as ``options=`` (one model family), e.g.::

    max_sequence_length: int | None = option(None, "T5 prompt tokens", rule=integer(1, 512),
                                             pipeline_arg="max_sequence_length")
    use_resolution_binning: bool | None = option(None, "snap the size to the trained ratios", rule=flag(),
                                                 pipeline_arg="use_resolution_binning")

Left at None, such an option is neither passed nor fingerprinted, so existing cache keys stay.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from iqabench.contracts.errors import UserInputError
from iqabench.contracts.options import INT64_MAX, Options, flag, integer, number, option, text
from iqabench.contracts.specs import GeneratorSpec


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
#: The largest image side an option may ask for: 8192 px is 4x SDXL's native side (64 Mpx per image); larger is a
#: typo (an extra zero) that would otherwise fail, or exhaust memory, only when the first batch is generated.
MAX_SIDE = 8192
#: The most denoising steps a spec may ask for (issue 26: steps=100000000 made every image fail, exit 3).
MAX_STEPS = 1000
_SIDE = integer(8, MAX_SIDE, multiple_of=8, words=f"a positive multiple of 8 (pixels), at most {MAX_SIDE}")


@dataclasses.dataclass(frozen=True)
class GenerationOptions(Options):
    """What every diffusers generator takes (items may override these per image, see GENERATION_OPTIONS).

    Each field is the whole declaration of its option: its rule checks a spec's value, ``pipeline_arg`` is the
    ``pipeline(...)`` argument it becomes, ``fingerprint`` puts it in the cache key. These five always were in the
    fingerprint, None included (``fingerprint_none``), so their keys stay as they were.
    """

    steps: int | None = option(None, "denoising steps (None: the preset's / pipeline's default)",
                               rule=integer(1, MAX_STEPS), pipeline_arg="num_inference_steps", item_param=True,
                               fingerprint=True, fingerprint_none=True)
    guidance_scale: float | None = option(None, "classifier-free guidance scale; <= 1 turns CFG off", rule=number(0),
                                          pipeline_arg="guidance_scale", item_param=True, fingerprint=True,
                                          fingerprint_none=True)
    height: int | None = option(None, "image height in pixels, a multiple of 8", rule=_SIDE, pipeline_arg="height",
                                item_param=True, fingerprint=True, fingerprint_none=True)
    width: int | None = option(None, "image width in pixels, a multiple of 8", rule=_SIDE, pipeline_arg="width",
                               item_param=True, fingerprint=True, fingerprint_none=True)
    negative_prompt: str | None = option(None, "negative prompt for the unconditional branch", rule=text(),
                                         pipeline_arg="negative_prompt", per_prompt=True, item_param=True,
                                         fingerprint=True, fingerprint_none=True)


@dataclasses.dataclass(frozen=True)
class HubOptions(GenerationOptions):
    """A pipeline from the Hugging Face cache or a local folder.

    ``path`` and ``revision`` are not fingerprinted by value: they select the files, whose commit or content
    signature is in the fingerprint instead.
    """

    path: str | None = option(None, "local folder with the pipeline (save_pretrained / hf download layout)",
                              rule=text(nonempty=True))
    revision: str | None = option(None, "hub commit or branch in the local cache (not with path=)",
                                  rule=text(nonempty=True))
    variant: str | None = option(None, "weights variant, e.g. fp16 (loads *.fp16.safetensors)",
                                 rule=text(nonempty=True), fingerprint=True, fingerprint_none=True)

    def check(self) -> None:
        if self.path is not None and self.revision is not None:
            raise UserInputError("revision= selects a hub commit and cannot go with path=")


@dataclasses.dataclass(frozen=True)
class TinyOptions(GenerationOptions):
    """A tiny random pipeline built in-process (offline tests)."""

    seed: int = option(0, "seed of the random weights", rule=integer(0, INT64_MAX), fingerprint="tiny_seed",
                       fingerprint_none=True)


#: Options an item's ``params`` may override for its own pipeline call (the fields declared ``item_param``).
GENERATION_OPTIONS = tuple(name for name, f in GenerationOptions.fields().items() if f.meta.item_param)


# -- issue 25: options only SD3 / FLUX / PixArt pipelines take -------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FamilyOptions(Options):
    """Pipeline arguments of the SD3 / FLUX.1 / PixArt-Sigma families (refused on a family that lacks them, see
    :mod:`.families`). They enter the fingerprint through the family's settings (``DiffusersGenerator``), with the
    resolution actually sampled, so SD 1.x/2.x/SDXL keys stay as pinned."""

    true_cfg_scale: float | None = option(None, "FLUX: real classifier-free guidance with negative_prompt when > 1 "
                                          "(guidance_scale is FLUX-dev's embedded guidance)", rule=number(1, 100),
                                          pipeline_arg="true_cfg_scale", fingerprint=False)
    max_sequence_length: int | None = option(None, "SD3 / FLUX / PixArt: T5 prompt length in tokens",
                                             rule=integer(1, 4096), pipeline_arg="max_sequence_length",
                                             fingerprint=False)
    use_resolution_binning: bool | None = option(None, "PixArt: sample at the nearest trained resolution bin and "
                                                 "resize to height x width (the pipeline's default: true)",
                                                 rule=flag(), pipeline_arg="use_resolution_binning",
                                                 fingerprint=False)


@dataclasses.dataclass(frozen=True)
class FamilyHubOptions(FamilyOptions, HubOptions):
    """A pipeline from the Hugging Face cache or a local folder, with the SD3 / FLUX / PixArt options."""


@dataclasses.dataclass(frozen=True)
class FamilyTinyOptions(FamilyOptions, TinyOptions):
    """A tiny random SD3 / FLUX / PixArt pipeline built in-process (offline tests)."""
