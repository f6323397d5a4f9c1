"""The ``guidance`` generator: a base diffusers pipeline whose scheduler steps with IQA-guided eps.

Specs::

    guidance:topiq_nr                           SDXL, alpha 30 (the paper's setting), decode z
    guidance:topiq_nr[alpha=10,decode=x0]
    guidance:my_metric[base=tiny-sd,alpha=200]  any registered differentiable NR metric, any base

Spec options: ``alpha`` (default 30.0), ``decode`` (``z`` or ``x0``: which latent f sees decoded;
spelled ``variant`` before, still accepted with a warning),
``floor`` (safe-log floor, see :mod:`.guide`), ``scaling`` (``paper``, the default: the
paper's formula without sigma_t; ``classifier``: times sigma_t), ``checkpointing`` (``block``, the default:
diffusers' per-block VAE checkpointing; ``layer``: per VAE layer and metric block,
less memory for the same recomputation; ``off``: fastest, most memory; all three
give bit-identical images, so it is not in the fingerprint), ``base`` (default ``sdxl``; any diffusers
generator spec, ``acpo:<path>`` included) and every option of the base model
(``steps``, ``guidance_scale``, ``height``, ``width``, ...). Items may set
``alpha`` in their params. The baseline is the base model with the same
generation options; ``alpha=0`` generates exactly the base model's images.

Cheaper gradients, opt-in (the paper's setting is the default; each changes the images, so each is in the
cache key, and ``perf/guidance.py`` measures how far its images are from the default's):
``metric_size`` (f sees the decoded image with its shorter side resized to this many pixels, or ``native``:
the side the metric was trained at, e.g. 384 for topiq_nr; default: as generated), ``decoder`` (``vae``, the
default, or ``tiny``: the gradient goes through a distilled tiny decoder, TAESD / TAESDXL, see
:mod:`.tiny_decoder`) and ``tiny_decoder`` (its hub id or folder; default: the one matching the base).

``variant`` is the base model's weights variant (``variant=fp16``), as on every
diffusers generator: it used to be guidance's z/x0 switch too, which shadowed
the weights option and made guidance over a hub base look for ``*.z.safetensors``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import WorkItem, register_generator
from iqabench.contracts.needs import declare, is_collecting
from iqabench.contracts.options import Options, number, option, short_repr, short_text
from iqabench.contracts.specs import GeneratorSpec, SpecError
from iqabench.execution.runtime import Runtime
from iqabench.metrics import metric_fingerprint, metric_info, metric_needs

from ..generator_options import GENERATION_OPTIONS, MAX_SIDE
from ..quality_base import QualityGenerator
from .checkpointing import checkpoint_guidance
from .guide import DECODE_MODES, SCALINGS, GuidanceConfig, IQAGuidance, guided_scheduler
from .tiny_decoder import (
    TinyDecoderFiles,
    check_latent_channels,
    default_tiny_decoder,
    find_tiny_decoder,
    load_tiny_decoder,
    vae_latent_channels,
    vae_scaling_factor,
)

#: What the guidance gradient decodes with: the base model's VAE (the paper) or a distilled tiny decoder.
DECODERS = ("vae", "tiny")
#: How the guidance gradient saves memory (see .checkpointing); results are bit-identical, so not fingerprinted.
CHECKPOINTING = ("block", "layer", "off")


@dataclasses.dataclass(frozen=True)
class GuidanceOptions(Options):
    """Gradient IQA guidance (IQA-Adapter paper Sec. 3.1); every other option goes to the base model."""

    base: str = option("sdxl", "base generator spec: any diffusers generator, acpo:<folder> included")
    alpha: float = option(30.0, "guidance strength (the paper's SDXL value: 30); items may set alpha", rule=number(),
                          fingerprint=True)
    decode: str = option("z", "what f sees decoded: z (z_t, the paper's formula) or x0 (predicted clean latent)",
                         choices=DECODE_MODES, fingerprint="variant")  # its old name: cache keys stay
    floor: float = option(0.01, "floor of the safe log of f's score", rule=number(), fingerprint=True)
    metric_size: int | str | None = option(None, "f sees the decoded image with its shorter side resized to this "
                                           "many pixels, or 'native' (the metric's own input side, e.g. 384 for "
                                           "topiq_nr); None: as generated (the paper)")
    scaling: str = option("paper", "paper: the paper's formula without sigma_t; classifier: times sigma_t "
                          "(classifier-guidance scaling, the cache keys of images made before issue 16)",
                          choices=SCALINGS)
    checkpointing: str = option("block", "how the guidance gradient saves memory: block (diffusers' per-block VAE "
                                "checkpointing), layer (per layer: less memory) or off (fastest); bit-identical "
                                "images, so not in the cache key", choices=CHECKPOINTING)
    decoder: str = option("vae", "what the gradient decodes with: vae (the base model's, the paper) or tiny (a "
                          "distilled tiny decoder, TAESD/TAESDXL: much cheaper, different images)", choices=DECODERS)
    tiny_decoder: str | None = option(None, "with decoder=tiny: its hub id or folder (None: madebyollin/taesdxl "
                                      "for SDXL and PixArt-Sigma bases, madebyollin/taesd for SD 1.x/2.x, "
                                      "madebyollin/taesd3 for SD3, madebyollin/taef1 for FLUX.1)")

    def check(self) -> None:
        size = self.metric_size
        if size is not None and size != "native" and (isinstance(size, bool) or not _is_int(size)
                                                      or not 8 <= int(size) <= MAX_SIDE):
            raise UserInputError(f"metric_size={short_repr(size)} should be a side in pixels (>= 8, at most "
                                 f"{MAX_SIDE}), 'native' or None")
        if self.tiny_decoder is not None and self.decoder != "tiny":
            raise UserInputError("tiny_decoder= is only read with decoder=tiny")


def _is_int(value: Any) -> bool:
    try:
        return int(value) == float(value)
    except (TypeError, ValueError, OverflowError):
        return False


#: alpha 30: the paper's SDXL value (Sec. 3.1); scaling "paper": its formula without sigma_t (issue 16),
#: "classifier" multiplies by sigma_t (classifier-guidance scaling, see :mod:`.guide`).
GUIDANCE_OPTIONS: dict[str, Any] = GuidanceOptions.defaults()


def _renamed_options(spec: GeneratorSpec) -> GeneratorSpec:
    """``variant=z|x0`` (the old name of ``decode``) becomes ``decode=``, with a warning; other ``variant``
    values are the base model's weights variant and stay."""
    options = spec.options_dict
    if options.get("variant") in DECODE_MODES and "decode" not in options:
        warnings.warn(f"generator {str(spec)!r}: the guidance option variant={options['variant']} is now spelled "
                      f"decode={options['variant']} (variant= is the base model's weights variant, e.g. fp16)",
                      FutureWarning, stacklevel=4)
        options["decode"] = options.pop("variant")
        return GeneratorSpec(spec.family, spec.variant, tuple(sorted(options.items())))
    return spec


def _metric_side(size: Any, metric: str, where: str) -> int | None:
    """``metric_size`` as pixels: ``native`` is the metric's documented input side (one sentence if it has none)."""
    if size is None:
        return None
    if size != "native":
        return int(size)
    side = metric_info(metric).native_side
    if side is None:
        raise SpecError(f"{where}: metric {metric!r} has no documented input size of its own, so metric_size=native "
                        "has nothing to resize to; give a side in pixels, e.g. metric_size=384")
    return side


def _guidance_config(options: Mapping[str, Any], metric: str, where: str) -> GuidanceConfig:
    try:
        if options["decode"] not in DECODE_MODES:
            raise UserInputError(f"decode {options['decode']!r} is unknown: choose 'z' (decode z_t, the paper's "
                                 "formula) or 'x0' (decode the predicted clean latent)")
        return GuidanceConfig(alpha=float(options["alpha"]), decode=str(options["decode"]),
                              floor=float(options["floor"]),
                              metric_size=_metric_side(options.get("metric_size"), metric, where),
                              scaling=str(options["scaling"]))
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecError(f"{where}: {exc}") from exc


class GuidanceGenerator(QualityGenerator):
    """The base model's pipeline with :func:`guided_scheduler` around every pipeline call."""

    item_params = frozenset(GENERATION_OPTIONS) | {"alpha"}
    fingerprint_class = "guidance/v1"
    options_class = GuidanceOptions
    refused_bases = ("guidance",)
    refusal = "the base of IQA guidance cannot itself be a guidance generator"

    def __init__(self, spec: GeneratorSpec, runtime: Runtime):
        where = f"generator {short_text(str(spec))!r}"
        if not spec.variant:
            raise SpecError("generator 'guidance' needs a differentiable NR metric: guidance:<metric>, "
                            "e.g. guidance:topiq_nr[alpha=30]")
        info = metric_info(spec.variant)  # unknown names raise with suggestions
        if not info.differentiable or info.mode != "NR":
            raise SpecError(f"{where}: metric {spec.variant!r} is not a differentiable no-reference metric, so it "
                            "cannot guide sampling (pick e.g. topiq_nr, or register a differentiable model)")
        self.metric_name = spec.variant
        if is_collecting():  # the guiding metric's files, for the preflight and fetch (a plain build, e.g. to key
            for need in metric_needs(self.metric_name):  # images, does not need them: the metric is built later)
                declare(need)
        spec = _renamed_options(spec)
        super().__init__(spec, runtime, where=where)
        self.config = _guidance_config(self.options, self.metric_name, where)
        self.tiny_decoder_files = self._find_tiny_decoder(where)
        self.metric = None
        self._guidance: IQAGuidance | None = None

    def _find_tiny_decoder(self, where: str) -> TinyDecoderFiles | None:
        """With ``decoder=tiny``, locate its files now (a missing decoder fails before any work starts).

        None for ``decoder=vae``, and for the tiny test bases without ``tiny_decoder=``: they get a seeded random
        tiny decoder of matching shape, as they get a random VAE.
        """
        if self.options["decoder"] != "tiny":
            return None
        source = self.options.get("tiny_decoder")
        location = self._base_gen.location
        if source is None:
            if location is None:
                return None
            source = default_tiny_decoder(str(location.model_index.get("_class_name", "")),
                                          vae_scaling_factor(location.folder))
        files = find_tiny_decoder(str(source), where)
        if files is None:  # missing, declared to the preflight (which refuses the run before any work)
            return None
        base_channels = vae_latent_channels(location.folder) if location is not None else None
        if base_channels is not None:  # refuse a decoder of another latent space now, not at the first batch
            check_latent_channels(files.config(), base_channels, where, files.source)
        return files

    # -- protocol ---------------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """The base model's fingerprint plus the metric (name and version) and every guidance setting."""
        fp = super().fingerprint()  # its "variant" is the decode mode (own_fingerprint), as before the rename
        base = self._base_gen.fingerprint()
        if "variant" in base:  # a hub base's weights variant (fp16, ...), which the decode mode would shadow
            fp["weights_variant"] = base["variant"]
        return fp

    def own_fingerprint(self) -> dict[str, Any]:
        """What the fields cannot say: the metric's version, the resolved metric side, the decoder's files, and
        the entries whose presence depends on a setting (alpha, decode as ``variant`` and floor are fields)."""
        fp: dict[str, Any] = {
            "metric": self.metric_name,
            "metric_fingerprint": metric_fingerprint(self.metric_name),
            "metric_size": self.config.metric_size,
            "omega": "linear-0-to-1",
        }
        if self.config.metric_size is not None:
            # issue 18: the shorter side, antialiased (was: a square, not antialiased): new images, new keys
            fp["metric_resize"] = "shorter-side-antialiased"
        if self.options["decoder"] != "vae":
            fp["decoder"] = self.options["decoder"]
            files = self.tiny_decoder_files
            fp.update(files.fingerprint() if files is not None else
                      {"tiny_decoder": "iqabench.tiny_models.tiny_autoencoder", "seed": self.options.get("seed", 0)})
        if self.config.scaling != "classifier":
            # Before issue 16 the formula had sigma_t and the fingerprint no "scaling": images cached then are
            # exactly scaling=classifier's, so that option keeps their keys and the new default gets new ones.
            fp["scaling"] = self.config.scaling
            # Issue 16 review: scaling=paper first differentiated w.r.t. Euler's scaled sample (a factor
            # sqrt(abar_t) too small on VE schedulers); now w.r.t. z_t itself, so those images get new keys.
            fp["gradient"] = "z_t"
        return fp

    def guidance(self) -> IQAGuidance:
        """The guidance object (built on first use, after the pipeline has its device and dtype)."""
        if self._guidance is None:
            from iqabench.metrics import build_metric

            pipe = self.pipeline
            self.metric = build_metric(self.metric_name, self.runtime, as_loss=True)
            mode = self.options["checkpointing"]
            if mode != "off" and getattr(pipe.vae, "_supports_gradient_checkpointing", False):
                pipe.vae.enable_gradient_checkpointing()  # only active under grad: the final decode is unchanged
            self._guidance = IQAGuidance(self.metric, pipe.vae, self.config, decoder=self._tiny_decoder(pipe))
            if mode == "layer":  # on the decoder guidance uses (an fp32 copy for an fp16 SDXL VAE) and the metric
                checkpoint_guidance(self._guidance._decoder, self.metric.module)
        return self._guidance

    def release(self) -> None:
        """Drop the pipeline and what guidance built on it (the metric, a decoder copy, the tiny decoder)."""
        super().release()
        self._guidance = None
        self.metric = None

    def _tiny_decoder(self, pipe: Any) -> Any:
        """The tiny decoder (``decoder=tiny``) on the pipeline's device and dtype, or None (decode with the VAE)."""
        if self.options["decoder"] != "tiny":
            return None
        where = f"generator {self.name!r}"
        channels = int(pipe.vae.config.latent_channels)
        if self.tiny_decoder_files is None:
            from iqabench.support.tiny_models import tiny_autoencoder

            decoder = tiny_autoencoder(int(self.options.get("seed", 0) or 0), latent_channels=channels)
        else:
            decoder = load_tiny_decoder(self.tiny_decoder_files, channels, where)
        decoder = decoder.to(device=pipe.vae.device)
        # (cast only when needed: diffusers warns on every .to(dtype=...) of a model that is already in it)
        return decoder if decoder.dtype == pipe.vae.dtype else decoder.to(dtype=pipe.vae.dtype)

    def _unpacker(self, opts: Mapping[str, Any]) -> Any:
        """FLUX: packed [B, tokens, 4C] latents -> [B, C, h, w], with diffusers' own ``_unpack_latents``."""
        pipe = self.pipeline
        factor = pipe.vae_scale_factor
        height = opts.get("height") or pipe.default_sample_size * factor
        width = opts.get("width") or pipe.default_sample_size * factor
        return lambda latents: type(pipe)._unpack_latents(latents, height, width, factor)

    def _call(self, batch: list[WorkItem], opts: Mapping[str, Any]) -> torch.Tensor:
        alpha = batch[0].params.get("alpha", self.config.alpha)
        config = _guidance_config({**self.options, "alpha": alpha}, self.metric_name, f"generator {self.name!r}")
        if config.alpha == 0:
            return super()._call(batch, opts)  # exactly the base model: the scheduler is not even wrapped
        guidance = self.guidance()
        guidance.config = replace(guidance.config, alpha=config.alpha)
        guidance.trace = []
        guidance.unpack = self._unpacker(opts) if self.pipeline_family.packed_latents else None
        with guided_scheduler(self.pipeline.scheduler, guidance):
            return super()._call(batch, opts)


@register_generator("guidance", description="Gradient IQA guidance (IQA-Adapter paper Sec. 3.1): "
                    "guidance:<differentiable NR metric>[alpha=30,decode=z|x0,base=sdxl,metric_size=native,"
                    "decoder=vae|tiny]",
                    weights=lambda: (None, "uses its base model's and its metric's weights (see their rows)"),
                    options=GuidanceOptions)
def build_guidance(spec: GeneratorSpec, runtime: Runtime) -> GuidanceGenerator:
    """Validate the spec and the metric's metadata; nothing heavy is loaded."""
    return GuidanceGenerator(spec, runtime)
