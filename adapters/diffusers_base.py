""":class:`DiffusersGenerator`: a diffusers text-to-image pipeline behind the Generator protocol.

The presets built on it (``sdxl``, ``sd15``, ``sd21``, ``diffusers:<id>``, ``tiny-sd``, ``tiny-sdxl``) are in
:mod:`.presets`, the weights lookup in :mod:`.hub_cache`, option checking in :mod:`.generator_options`.
It is the class the quality-aware generators subclass
(IQA-Adapter, gradient guidance, ACPO): it owns option validation, the weights
check, lazy loading, per-item seeding, grouping by per-item params and the
fingerprint. Subclasses change the pipeline through ``load_pipeline`` and add
call arguments through ``pipeline_kwargs``.

Reproducibility rules (what makes the image cache sound):

* **Per-item noise.** Each item gets its own ``torch.Generator("cpu")`` seeded
  with ``item.seed``; diffusers draws each item's initial latents from its own
  generator. CPU generators (not ``runtime.device`` ones) make the initial noise
  of a seed the same on cpu, cuda and mps, as diffusers' reproducibility guide
  recommends; only kernel rounding then differs between devices.
* **Fixed call shape.** CPU convolution kernels (oneDNN) pick their algorithm by
  batch size, so the same item decoded in a batch of 1 and of 4 differs in a few
  pixels by one 8-bit level (measured on the tiny models). With a fixed shape, a
  row's result depends neither on its neighbours nor on its position. So every
  pipeline call runs exactly ``runtime.batch_size`` items, padding a short call
  with copies of its last item whose images are dropped: an image is then
  identical whatever batch it was generated in. Two runs with a *different*
  ``batch_size`` or CPU thread count may still differ by one 8-bit level in a few
  values (measured on the tiny models: 4-7 of 49,152 values, batch size 4 vs 1 or
  1 vs 2 threads); neither is in the fingerprint, so one cache serves them all.
  Call :meth:`generate` with ``batch_size`` items (or more) to avoid padding.
* **Nothing from the network.** Hub weights are looked up in the Hugging Face
  cache only (``HF_HUB_CACHE`` / ``HF_HOME``, read when called) and loaded with
  ``local_files_only=True``, so a missing file fails at once instead of hanging.

Half precision on CPU is slow and badly supported; a runtime asking for fp16 or
bf16 on CPU gets it anyway (the choice is the user's). The SDXL VAE overflows in
fp16; diffusers upcasts it itself when the VAE config says ``force_upcast``.
The Stable Diffusion safety checker is never loaded: it blacks out images, which
would silently corrupt every IQA score.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from PIL import Image

from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import WorkItem
from iqabench.contracts.needs import Need, declare
from iqabench.contracts.options import (
    OptionField,
    Options,
    check_option,
    fingerprint_values,
    option_fields,
    pipeline_arguments,
    short_text,
)
from iqabench.contracts.specs import GeneratorSpec, SpecError
from iqabench.execution.fast_paths import FastPaths, apply_fast_paths, sdpa_backend
from iqabench.execution.image_checks import GeneratedImageError, finite_per_item
from iqabench.execution.image_tensors import pil_to_uint8, quantize, to_pil
from iqabench.execution.runtime import Runtime
from iqabench.support import tiny_models

from .families import PipelineFamily, family_baseline, family_settings, resolve_family
from .generator_options import (
    GENERATION_OPTIONS,
    HubOptions,
    TinyOptions,
    base_model_spec,
    canonical_params,
    unknown_option_message,
)
from .hub_cache import (
    HUB_ID,
    WeightsLocation,
    find_weights,
    hub_cache_dir,
    loaded_files,
    local_signature,
    snapshot_files,
    weights_status,
)

if TYPE_CHECKING:  # pragma: no cover - diffusers is imported lazily
    from diffusers import DiffusionPipeline

#: Bump when the way pixels become the returned PIL image changes (rounding, mode).
IMAGE_FORMAT_VERSION = 1

__all__ = ["GENERATION_OPTIONS", "IMAGE_FORMAT_VERSION", "DiffusersGenerator", "WeightsLocation", "base_model_spec",
           "find_weights", "hub_cache_dir", "weights_status"]


# -- the generator ---------------------------------------------------------------------------------------
class DiffusersGenerator:
    """A diffusers text-to-image pipeline behind the Generator protocol.

    ``options`` is the family's option dataclass (default: :class:`HubOptions`, or :class:`TinyOptions` with a
    ``tiny_builder``); its fields say how each option is checked, which pipeline argument it becomes and what
    enters the fingerprint (:mod:`iqabench.contracts.options`). ``defaults`` names every option the spec may set (a key
    missing from it is an unknown option) together with its default, ``None`` meaning "the pipeline's own
    default"; it defaults to the dataclass's defaults (a preset passes ``HubOptions.defaults(steps=35)``).
    A key of ``defaults`` that is not a field is taken as it is (neither checked nor fingerprinted).
    ``source`` is a hub id, or a label when ``tiny_builder`` builds the pipeline in-process from
    ``options["seed"]``.

    The baseline of a base generator is the same spec with ``guidance_scale=1.0``,
    i.e. the same pipeline without classifier-free guidance (diffusers skips the
    unconditional branch at <= 1); a spec already at 1.0 has no baseline. Quality
    conditioned subclasses override :meth:`baseline` with their base model.
    """

    family: str = "diffusers"
    #: The fingerprint's ``class`` entry. It is derived from the class: a subclass that does not set its own gets
    #: ``<module>.<qualname>/v1`` (see ``__init_subclass__``), so a subclass that changes pixels but keeps
    #: ``source`` never shares its parent's cache keys. Setting it explicitly (the built-in classes keep the
    #: labels their caches were written with) is how a subclass that does not change pixels opts in to sharing.
    fingerprint_class: ClassVar[str] = "diffusers-base/v1"
    #: Item ``params`` keys this generator understands besides its options declared ``item_param`` (which each
    #: instance adds); subclasses add their own.
    item_params: frozenset[str] = frozenset(GENERATION_OPTIONS)
    #: Options set from the spec itself rather than by the user (``path`` of ``diffusers:<folder>``): a spec
    #: derived from this generator's options (a quality generator's baseline) must leave them out.
    implied_options: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "fingerprint_class" not in cls.__dict__:
            # A --plugin file's module name hashes its path: leave it out, so moving the file keeps the keys.
            module = "" if cls.__module__.startswith("iqabench_plugin_") else f"{cls.__module__}."
            cls.fingerprint_class = f"{module}{cls.__qualname__}/v1"

    def __init__(self, spec: GeneratorSpec, runtime: Runtime, *, source: str, defaults: Mapping[str, Any] | None = None,
                 tiny_builder: Callable[[int], DiffusionPipeline] | None = None,
                 options: type[Options] | Mapping[str, OptionField] | None = None,
                 pipeline_family: PipelineFamily | None = None):
        self.spec = spec
        self.runtime = runtime
        self.family = spec.family
        self.name = str(spec)
        self.source = source
        self.tiny_builder = tiny_builder
        options = options or (TinyOptions if tiny_builder is not None else HubOptions)
        #: name -> declared option (the one place validation, fingerprint and the pipeline call read from)
        self.option_fields: dict[str, OptionField] = dict(options) if isinstance(options, Mapping) \
            else option_fields(options)
        if defaults is None:
            defaults = {name: f.default for name, f in self.option_fields.items()}
        self.options = self._merge_options(spec, defaults)
        self.item_params = frozenset(type(self).item_params) | self.item_option_names  # what items may override
        if not isinstance(options, Mapping):  # choices and cross-field checks (a quality generator parses its own)
            options.parse(self.options, f"generator {short_text(str(spec))!r}")
        self._pipeline = None
        self.location: WeightsLocation | None = None
        if tiny_builder is None:
            self.location = self._require_weights()
        # issue 25: what this pipeline family means (baseline, options, wrappers), see adapters/families.py
        self.pipeline_family, transformer_config = resolve_family(tiny_builder, self.location, pipeline_family)
        if tiny_builder is None and self.location is None:
            # files missing, declared to the preflight: the family is unknown until they are there, so its option
            # checks wait (the preflight stops the run before keys are made; a fetched snapshot is re-planned)
            self.family_settings = {}
        else:
            self.family_settings = family_settings(self.pipeline_family, self.options, set(spec.options_dict),
                                                   transformer_config, f"generator {self.name!r}")

    # -- construction -----------------------------------------------------------------------------------
    def _merge_options(self, spec: GeneratorSpec, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults with the spec's values, each checked by its field's rule (one sentence, before any work)."""
        options = dict(defaults)
        where = f"generator {short_text(str(spec))!r}"
        for key, value in spec.options:
            if key not in defaults:
                raise SpecError(unknown_option_message(key, list(defaults), where, "option"))
            options[key] = check_option(self.option_fields.get(key), key, value, where)
        return options

    def _require_weights(self) -> WeightsLocation | None:
        """Find the files now (cheap, offline) so a missing model fails before any work starts.

        The snapshot is declared as a :class:`~iqabench.contracts.needs.Need` (what ``iqabench fetch`` lists and
        downloads);
        while the preflight collects needs, a missing one returns None instead of raising.
        """
        path = self.options.get("path")
        variant = self.options.get("variant")
        location, detail = find_weights(self.source, path=path, revision=self.options.get("revision"),
                                        variant=variant)
        if path is not None:
            download = f"`hf download {self.source} --local-dir DIR`" if HUB_ID.match(self.source) else "hf download"
            message = (f"generator {self.name!r} found no usable diffusers pipeline at {path} ({detail}); "
                       f"give a folder written by save_pretrained or by {download}")
            need = Need(f"pipeline folder of {self.name}", Path(path).expanduser(), "manual",
                        "a folder written by save_pretrained", location is not None, message=message)
        else:
            need = self._hub_need(location, detail)
        declare(need)
        return location

    def _hub_need(self, location: WeightsLocation | None, detail: str) -> Need:
        """The hub snapshot this generator loads: the files of a present one, its cache folder when missing."""
        variant = self.options.get("variant")
        message = (f"weights for generator {self.name!r} are missing ({detail}, nothing is downloaded here): "
                   f"run `iqabench fetch` with the same arguments on a connected machine (or `hf download "
                   f"{self.source}`) and copy the cache over (or set HF_HUB_CACHE to it), or pass a local copy as "
                   f"{self.spec.family}[path=/dir]")
        what = f"{self.source} pipeline" + (f" ({variant} weights)" if variant else "")
        if location is None:
            folder = hub_cache_dir() / f"models--{self.source.replace('/', '--')}"
            return Need(what, folder, "hub-snapshot", self.source, False, revision=self.options.get("revision"),
                        variant=variant, message=message)
        files = loaded_files(location.model_index, snapshot_files(location.folder), variant)
        size = sum((location.folder / f).stat().st_size for f in files)
        return Need(what, location.folder, "hub-snapshot", self.source, True, size=size,
                    revision=self.options.get("revision"), variant=variant, files=tuple(files))

    # -- the pipeline ---------------------------------------------------------------------------------------
    @property
    def pipeline(self) -> DiffusionPipeline:
        """The loaded pipeline, on the runtime's device and dtype; loaded on first use only."""
        if self._pipeline is None:
            pipe = self.load_pipeline()
            if pipe.dtype != self.runtime.torch_dtype:  # casting a same-dtype pipeline only logs a warning
                pipe = pipe.to(dtype=self.runtime.torch_dtype)
            pipe = pipe.to(self.runtime.torch_device)
            pipe.set_progress_bar_config(disable=True)  # the runner shows one bar over images
            if self.runtime.attention_slicing:
                pipe.enable_attention_slicing()
            apply_fast_paths(pipe, FastPaths.from_runtime(self.runtime), name=f"generator {self.name!r}")
            self._pipeline = pipe
        return self._pipeline

    def load_pipeline(self) -> DiffusionPipeline:
        """Override point: build or load the pipeline (device and dtype are applied afterwards)."""
        if self.tiny_builder is not None:
            return self.tiny_builder(self.options.get("seed", 0))
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        assert self.location is not None
        kwargs: dict[str, Any] = {"torch_dtype": self.runtime.torch_dtype, "local_files_only": True}
        if self.options.get("variant"):
            kwargs["variant"] = self.options["variant"]
        if "safety_checker" in self.location.model_index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        index, folder_path = self.location.model_index, self.location.folder
        if "feature_extractor" in index and not (folder_path / "feature_extractor").is_dir():
            kwargs["feature_extractor"] = None  # only the safety checker uses it; downloads may leave both out
        folder = str(self.location.folder)  # the resolved snapshot: no revision lookup, no network
        try:
            return AutoPipelineForText2Image.from_pretrained(folder, **kwargs)
        except ValueError as exc:
            if "AutoPipeline" not in str(exc):
                raise
            return DiffusionPipeline.from_pretrained(folder, **kwargs)

    def release(self) -> None:
        """Drop the loaded pipeline (frees its memory once nothing else holds it); the next call reloads."""
        self._pipeline = None
        self._signature = None  # the call-signature cache holds the pipeline too

    # -- protocol ---------------------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes pixels; reads files' metadata at most, never loads the pipeline."""
        fp: dict[str, Any] = {
            "class": self.fingerprint_class,
            "source": self.source,
            **fingerprint_values(self.option_fields, self.options),  # every field declared ``fingerprint``
            "dtype": str(self.runtime.torch_dtype).removeprefix("torch."),
            "device_type": self.runtime.torch_device.type,
            "noise": "cpu-generator-per-item",
            "image_format": IMAGE_FORMAT_VERSION,
        }
        if self.tiny_builder is not None:
            fp["tiny_zoo_version"] = tiny_models.TINY_ZOO_VERSION
            from iqabench.support import tiny_modern

            if self.tiny_builder in tiny_modern.PIPELINE_CLASS:  # SD3 / FLUX / PixArt tiny: their own configs
                fp.update(tiny_modern.fingerprint())
        if self.family_settings:  # SD3 / FLUX / PixArt only: SD 1.x/2.x/SDXL keys stay as pinned
            fp.update(self.family_settings)
        if self.location is not None:
            index = self.location.model_index
            fp["pipeline"] = index.get("_class_name")
            scheduler = index.get("scheduler")
            fp["scheduler"] = scheduler[1] if isinstance(scheduler, list) and len(scheduler) == 2 else None
            if self.location.commit is not None:
                fp["commit"] = self.location.commit
            else:
                fp["source"] = str(self.location.folder)
                fp["files"] = local_signature(self.location.folder)
        return fp

    def baseline(self) -> str | None:
        """Same spec without classifier-free guidance (``guidance_scale=1.0``); None when already there.

        Per family (adapters/families.py): FLUX-dev's is embedded guidance 1.0, or true CFG off when
        ``true_cfg_scale`` > 1 with a ``negative_prompt``; FLUX-schnell has none (:attr:`no_baseline_reason`)."""
        return family_baseline(self.pipeline_family, self.spec, self.options)[0]

    @property
    def baseline_note(self) -> str | None:
        """What the baseline means where it is not plainly "CFG off" (shown in the report), else None."""
        baseline, note = family_baseline(self.pipeline_family, self.spec, self.options)
        return note if baseline is not None else None

    @property
    def no_baseline_reason(self) -> str | None:
        """Why this generator names no baseline, where the family is the reason (FLUX-schnell)."""
        baseline, note = family_baseline(self.pipeline_family, self.spec, self.options)
        return note if baseline is None else None

    def pipeline_kwargs(self, items: Sequence[WorkItem]) -> dict[str, Any]:
        """Override point: extra ``pipeline(...)`` arguments for one call.

        All ``items`` share the same ``params`` and there are exactly
        ``runtime.batch_size`` of them (padding included), so per-item tensors
        built from them line up with the prompts.
        """
        return {}

    @property
    def item_option_names(self) -> frozenset[str]:
        """The options items may override: the fields declared ``item_param``."""
        return frozenset(name for name, f in self.option_fields.items() if f.meta.item_param)

    def generation_options(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The spec's pipeline options with one group's item ``params`` applied (validated by their fields)."""
        fields = self.option_fields
        opts = {k: self.options.get(k) for k, f in fields.items() if f.meta.item_param or f.meta.pipeline_arg}
        where = f"generator {self.name!r}"
        overridable = self.item_option_names
        for key, value in params.items():
            if key not in self.item_params:
                raise ValueError(unknown_option_message(key, sorted(self.item_params), where, "item param"))
            if key in overridable:
                opts[key] = check_option(fields[key], key, value, where)
        return opts

    def group_key(self, item: WorkItem) -> Hashable:
        """Override point: items with equal keys may share one pipeline call (default: equal ``params``)."""
        return canonical_params(item.params)

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One RGB image per item, in input order, independent of the other items (see module docstring)."""
        return [to_pil(image) for image in self.generate_tensors(items)]

    def generate_tensors(self, items: Sequence[WorkItem]) -> list[torch.Tensor]:
        """:meth:`generate` without the PIL round trip: one uint8 [3, H, W] tensor per item, on the device.

        The bytes are exactly those of the PIL image :meth:`generate` returns (and of the cached PNG): the
        pipeline's [0, 1] output is quantised as diffusers' own PIL conversion does
        (:func:`iqabench.execution.image_tensors.quantize`), so the runner can score images in memory.
        """
        items = list(items)
        groups: dict[Hashable, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(self.group_key(item), []).append(index)
        size = self.runtime.batch_size
        images: list[torch.Tensor | None] = [None] * len(items)
        for indices in groups.values():
            opts = self.generation_options(items[indices[0]].params)
            for start in range(0, len(indices), size):
                chunk = indices[start : start + size]
                batch = [items[i] for i in chunk]
                batch += [batch[-1]] * (size - len(batch))  # fixed call shape: see module docstring
                for i, image in zip(chunk, self._call(batch, opts), strict=False):
                    images[i] = image
        return images  # type: ignore[return-value]

    def _call_signature(self, pipe: Any) -> tuple[bool, frozenset[str]]:
        """(takes **kwargs, argument names) of ``pipe.__call__``, read once per pipeline rather than per call."""
        cached = getattr(self, "_signature", None)
        if cached is None or cached[0] is not pipe:
            parameters = inspect.signature(pipe.__call__).parameters
            accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            cached = self._signature = (pipe, accepts_any, frozenset(parameters))
        return cached[1], cached[2]

    def _call(self, batch: list[WorkItem], opts: Mapping[str, Any]) -> torch.Tensor:
        """One pipeline call: uint8 [N, 3, H, W] on the device (subclasses wrap it to change the sampler)."""
        pipe = self.pipeline
        kwargs: dict[str, Any] = {
            "prompt": [item.prompt for item in batch],
            "generator": [torch.Generator("cpu").manual_seed(int(item.seed)) for item in batch],
            "output_type": "pt",
        }
        kwargs.update(pipeline_arguments(self.option_fields, opts, len(batch)))  # the fields' ``pipeline_arg``
        kwargs.update(self.pipeline_kwargs(batch))
        accepts_any, accepted = self._call_signature(pipe)
        if not accepts_any:
            unsupported = sorted(k for k in kwargs if k not in accepted)
            if unsupported:
                raise UserInputError(
                    f"generator {self.name!r}: {type(pipe).__name__} does not accept {', '.join(unsupported)}; "
                    "drop those options for this pipeline"
                )
        final: dict[str, Any] = {}
        if "callback_on_step_end" in accepted and "callback_on_step_end" not in kwargs:
            def keep_latents(_pipe, _step, _timestep, callback_kwargs):  # no device sync: checked once, after
                final["latents"] = callback_kwargs.get("latents")
                return callback_kwargs

            kwargs["callback_on_step_end"] = keep_latents
        with sdpa_backend(self.runtime.sdpa_backend):
            output = pipe(**kwargs)
        images = output.images
        # no callback_on_step_end (PixArt): check the decoded images instead, NaN latents decode to NaN pixels
        finite = finite_per_item(final.get("latents") if "latents" in final else
                                 images if isinstance(images, torch.Tensor) else None)
        if finite is not None and not all(finite[: len(batch)]):
            bad = [item.prompt_id for item, ok in zip(batch, finite, strict=False) if not ok]
            raise GeneratedImageError(f"generator {self.name!r} produced non-finite latents (NaN or inf) for "
                                      f"{', '.join(dict.fromkeys(bad))}: check its weights and guidance_scale")
        if isinstance(images, torch.Tensor):
            return quantize(images)
        return torch.stack([pil_to_uint8(image) for image in images])  # a pipeline that ignores output_type
