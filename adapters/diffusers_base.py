"""Base text-to-image generators on diffusers pipelines: ``sdxl``, ``sd15``, ``sd21``, ``diffusers:<id>``,
and the offline ``tiny-sd`` / ``tiny-sdxl``.

:class:`DiffusersGenerator` is the class the quality-aware generators subclass
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

import difflib
import hashlib
import inspect
import json
import os
import re
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from iqabench import testing
from iqabench.generators import WeightsMissingError, WorkItem, register_generator
from iqabench.runtime import Runtime
from iqabench.specs import GeneratorSpec, SpecError

if TYPE_CHECKING:  # pragma: no cover - diffusers is imported lazily
    from diffusers import DiffusionPipeline

#: Bump when the way pixels become the returned PIL image changes (rounding, mode).
IMAGE_FORMAT_VERSION = 1

#: Options an item's ``params`` may override for its own pipeline call.
GENERATION_OPTIONS = ("steps", "guidance_scale", "height", "width", "negative_prompt")

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


# -- where weights live --------------------------------------------------------------------------------
def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment *now*.

    ``huggingface_hub.constants`` freezes these paths at import time, so a test
    or user changing ``HF_HUB_CACHE`` later would otherwise be ignored.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        home = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface")
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class WeightsLocation:
    """Where a pipeline's files were found: a folder, plus the hub commit when it came from the cache."""

    folder: Path
    commit: str | None
    model_index: dict[str, Any]


def _missing_components(folder: Path, model_index: Mapping[str, Any], variant: str | None) -> list[str]:
    """Components named in model_index.json without a folder, or a denoiser folder without weight files."""
    missing = []
    for name, value in model_index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir():
            missing.append(name)
        elif name in ("unet", "transformer", "prior"):
            files = [p.name for p in sub.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES)]
            if variant:
                files = [f for f in files if f".{variant}." in f]
            if not files:
                missing.append(f"{name} weights" + (f" ({variant})" if variant else ""))
    return missing


def find_weights(source: str, *, path: str | None = None, revision: str | None = None,
                 variant: str | None = None) -> tuple[WeightsLocation | None, str]:
    """Look for a pipeline's files without loading or downloading anything.

    Returns ``(location, detail)``; ``location`` is None when the files are
    missing, and ``detail`` then says what is missing and where it looked.
    """
    if path is not None:
        folder = Path(path).expanduser().resolve()
        index = folder / "model_index.json"
        if not index.is_file():
            return None, f"no model_index.json in {folder}"
        where, commit = folder, None
    else:
        from huggingface_hub import try_to_load_from_cache

        cache = hub_cache_dir()
        found = try_to_load_from_cache(source, "model_index.json", cache_dir=cache, revision=revision)
        if not isinstance(found, str):
            return None, f"{source} is not in the Hugging Face cache at {cache}"
        index = Path(found)
        where = index.parent
        commit = where.name if re.fullmatch(r"[0-9a-f]{40}", where.name) else None
    try:
        model_index = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{index} is not readable JSON ({exc})"
    missing = _missing_components(where, model_index, variant)
    if missing:
        return None, f"{where} lacks {', '.join(missing)}"
    return WeightsLocation(where, commit, model_index), str(where)


def weights_status(source: str, **kwargs: Any) -> tuple[bool, str]:
    """``(present, detail)`` for ``iqabench list generators`` (the registry's ``weights=`` probe)."""
    location, detail = find_weights(source, **kwargs)
    return location is not None, detail


def _local_signature(folder: Path) -> str:
    """Hash of the weight/config files' names and sizes: a re-saved local folder gets a new fingerprint."""
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            digest.update(f"{file.relative_to(folder).as_posix()}:{file.stat().st_size};".encode())
    return digest.hexdigest()[:16]


# -- option checking -----------------------------------------------------------------------------------
def _check_value(key: str, value: Any, where: str) -> Any:
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
    elif key in ("path", "revision", "variant"):
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
    return value


def _unknown_option_message(key: str, known: Sequence[str], where: str, what: str) -> str:
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{where}: unknown {what} {key!r}.{hint} Known: {', '.join(sorted(known))}."


def _canonical_params(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(sorted(params.items())), sort_keys=True, default=str)


def base_model_spec(base_spec: GeneratorSpec, options: Mapping[str, Any], base_options: Mapping[str, Any],
                    own_options: Collection[str]) -> str:
    """The base model's spec with the generation options it shares with a quality generator built on it.

    IQA-Adapter, gradient guidance and ACPO compare against their base model run
    with the same steps, CFG, size and negative prompt; their own options
    (target, alpha, LoRA path, ...) stay behind.
    """
    keep = {k: v for k, v in options.items() if k in base_options and k not in own_options and v is not None}
    return str(GeneratorSpec(base_spec.family, base_spec.variant, tuple(sorted(keep.items()))))


# -- the generator ---------------------------------------------------------------------------------------
class DiffusersGenerator:
    """A diffusers text-to-image pipeline behind the Generator protocol.

    ``defaults`` names every option the spec may set (a key missing from it is an
    unknown option) together with its default; ``None`` means "the pipeline's own
    default". ``source`` is a hub id, or a label when ``tiny_builder`` builds the
    pipeline in-process from ``options["seed"]``.

    The baseline of a base generator is the same spec with ``guidance_scale=1.0``,
    i.e. the same pipeline without classifier-free guidance (diffusers skips the
    unconditional branch at <= 1); a spec already at 1.0 has no baseline. Quality
    conditioned subclasses override :meth:`baseline` with their base model.
    """

    family: str = "diffusers"
    #: Item ``params`` keys this generator understands; subclasses add their own.
    item_params: frozenset[str] = frozenset(GENERATION_OPTIONS)

    def __init__(self, spec: GeneratorSpec, runtime: Runtime, *, source: str, defaults: dict[str, Any],
                 tiny_builder: Callable[[int], DiffusionPipeline] | None = None):
        self.spec = spec
        self.runtime = runtime
        self.family = spec.family
        self.name = str(spec)
        self.source = source
        self.tiny_builder = tiny_builder
        self.options = self._merge_options(spec, defaults)
        self._pipeline = None
        self.location: WeightsLocation | None = None
        if tiny_builder is None:
            self.location = self._require_weights()

    # -- construction -----------------------------------------------------------------------------------
    def _merge_options(self, spec: GeneratorSpec, defaults: Mapping[str, Any]) -> dict[str, Any]:
        options = dict(defaults)
        for key, value in spec.options:
            if key not in defaults:
                raise SpecError(_unknown_option_message(key, list(defaults), f"generator {str(spec)!r}", "option"))
            options[key] = None if value is None else _check_value(key, value, f"generator {str(spec)!r}")
        if options.get("path") is not None and options.get("revision") is not None:
            raise SpecError(f"generator {str(spec)!r}: revision= selects a hub commit and cannot go with path=")
        return options

    def _require_weights(self) -> WeightsLocation:
        """Find the files now (cheap, offline) so a missing model fails before any work starts."""
        path = self.options.get("path")
        location, detail = find_weights(self.source, path=path, revision=self.options.get("revision"),
                                        variant=self.options.get("variant"))
        if location is not None:
            return location
        if path is not None:
            download = f"`hf download {self.source} --local-dir DIR`" if _HUB_ID.match(self.source) else "hf download"
            raise WeightsMissingError(
                f"generator {self.name!r} found no usable diffusers pipeline at {path} ({detail}); "
                f"give a folder written by save_pretrained or by {download}"
            )
        raise WeightsMissingError(
            f"weights for generator {self.name!r} are missing ({detail}, nothing is downloaded here): "
            f"run `hf download {self.source}` on a connected machine and copy the cache over "
            f"(or set HF_HUB_CACHE to it), or pass a local copy as {self.spec.family}[path=/dir]"
        )

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
            denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            if self.runtime.compile and denoiser is not None:
                denoiser.compile()  # in place: processors and adapters set later still apply
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

    # -- protocol ---------------------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes pixels; reads files' metadata at most, never loads the pipeline."""
        opts = self.options
        fp: dict[str, Any] = {
            "class": "diffusers-base/v1",
            "source": self.source,
            "steps": opts.get("steps"),
            "guidance_scale": opts.get("guidance_scale"),
            "height": opts.get("height"),
            "width": opts.get("width"),
            "negative_prompt": opts.get("negative_prompt"),
            "dtype": str(self.runtime.torch_dtype).removeprefix("torch."),
            "device_type": self.runtime.torch_device.type,
            "noise": "cpu-generator-per-item",
            "image_format": IMAGE_FORMAT_VERSION,
        }
        if self.tiny_builder is not None:
            fp["tiny_seed"] = opts.get("seed", 0)
            fp["tiny_zoo_version"] = testing.TINY_ZOO_VERSION
        if self.location is not None:
            index = self.location.model_index
            fp["pipeline"] = index.get("_class_name")
            scheduler = index.get("scheduler")
            fp["scheduler"] = scheduler[1] if isinstance(scheduler, list) and len(scheduler) == 2 else None
            fp["variant"] = opts.get("variant")
            if self.location.commit is not None:
                fp["commit"] = self.location.commit
            else:
                fp["source"] = str(self.location.folder)
                fp["files"] = _local_signature(self.location.folder)
        return fp

    def baseline(self) -> str | None:
        """Same spec without classifier-free guidance (``guidance_scale=1.0``); None when already there."""
        if self.options.get("guidance_scale") == 1.0:
            return None
        return str(self.spec.with_options(guidance_scale=1.0))

    def pipeline_kwargs(self, items: Sequence[WorkItem]) -> dict[str, Any]:
        """Override point: extra ``pipeline(...)`` arguments for one call.

        All ``items`` share the same ``params`` and there are exactly
        ``runtime.batch_size`` of them (padding included), so per-item tensors
        built from them line up with the prompts.
        """
        return {}

    def generation_options(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The spec's generation options with one group's item ``params`` applied (validated)."""
        opts = {k: self.options.get(k) for k in GENERATION_OPTIONS}
        where = f"generator {self.name!r}"
        for key, value in params.items():
            if key not in self.item_params:
                raise ValueError(_unknown_option_message(key, sorted(self.item_params), where, "item param"))
            if key in GENERATION_OPTIONS:
                opts[key] = None if value is None else _check_value(key, value, where)
        return opts

    def group_key(self, item: WorkItem) -> Hashable:
        """Override point: items with equal keys may share one pipeline call (default: equal ``params``)."""
        return _canonical_params(item.params)

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One RGB image per item, in input order, independent of the other items (see module docstring)."""
        items = list(items)
        groups: dict[Hashable, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(self.group_key(item), []).append(index)
        size = self.runtime.batch_size
        images: list[Image.Image | None] = [None] * len(items)
        for indices in groups.values():
            opts = self.generation_options(items[indices[0]].params)
            for start in range(0, len(indices), size):
                chunk = indices[start : start + size]
                batch = [items[i] for i in chunk]
                batch += [batch[-1]] * (size - len(batch))  # fixed call shape: see module docstring
                for i, image in zip(chunk, self._call(batch, opts), strict=False):
                    images[i] = image
        return images  # type: ignore[return-value]

    def _call(self, batch: list[WorkItem], opts: Mapping[str, Any]) -> list[Image.Image]:
        pipe = self.pipeline
        kwargs: dict[str, Any] = {
            "prompt": [item.prompt for item in batch],
            "generator": [torch.Generator("cpu").manual_seed(int(item.seed)) for item in batch],
            "output_type": "pil",
        }
        named = {"steps": "num_inference_steps", "guidance_scale": "guidance_scale", "height": "height",
                 "width": "width"}
        for key, arg in named.items():
            if opts.get(key) is not None:
                kwargs[arg] = opts[key]
        if opts.get("negative_prompt") is not None:
            kwargs["negative_prompt"] = [opts["negative_prompt"]] * len(batch)
        kwargs.update(self.pipeline_kwargs(batch))
        accepted = inspect.signature(pipe.__call__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
            unsupported = sorted(k for k in kwargs if k not in accepted)
            if unsupported:
                raise ValueError(
                    f"generator {self.name!r}: {type(pipe).__name__} does not accept {', '.join(unsupported)}; "
                    "drop those options for this pipeline"
                )
        output = pipe(**kwargs)
        return [image.convert("RGB") for image in output.images]


# -- built-in generators -----------------------------------------------------------------------------------
_COMMON = {"steps": None, "guidance_scale": None, "height": None, "width": None, "negative_prompt": None}
_HUB = {**_COMMON, "path": None, "revision": None, "variant": None}


def _no_variant(spec: GeneratorSpec) -> None:
    if spec.variant is not None:
        raise SpecError(
            f"generator {spec.family!r} takes no ':{spec.variant}' part; set options in brackets, "
            f"e.g. {spec.family}[steps=20]"
        )


def _hub_preset(family: str, source: str, description: str, **defaults: Any) -> None:
    def factory(spec: GeneratorSpec, runtime: Runtime) -> DiffusersGenerator:
        _no_variant(spec)
        return DiffusersGenerator(spec, runtime, source=source, defaults={**_HUB, **defaults})

    factory.__name__ = factory.__qualname__ = f"build_{family.replace('-', '_')}"
    register_generator(family, description=description, weights=partial(weights_status, source))(factory)


def _tiny_preset(family: str, builder: Callable[[int], Any], description: str) -> None:
    defaults = {**_COMMON, "steps": testing.TINY_STEPS, "guidance_scale": 7.5, "height": testing.TINY_IMAGE_SIZE,
                "width": testing.TINY_IMAGE_SIZE, "seed": 0}

    def factory(spec: GeneratorSpec, runtime: Runtime) -> DiffusersGenerator:
        _no_variant(spec)
        return DiffusersGenerator(spec, runtime, source=f"iqabench.testing.{builder.__name__}",
                                  defaults=defaults, tiny_builder=builder)

    factory.__name__ = factory.__qualname__ = f"build_{family.replace('-', '_')}"
    register_generator(family, description=description)(factory)


_hub_preset("sdxl", "stabilityai/stable-diffusion-xl-base-1.0",
            "Stable Diffusion XL base 1.0 (35 steps, CFG 7.5, 1024 px, as in the IQA-Adapter paper)",
            steps=35, guidance_scale=7.5, height=1024, width=1024)
_hub_preset("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "Stable Diffusion 1.5 (50 steps, CFG 7.5, 512 px: diffusers' defaults)",
            steps=50, guidance_scale=7.5, height=512, width=512)
_hub_preset("sd21", "stabilityai/stable-diffusion-2-1",
            "Stable Diffusion 2.1 (50 steps, CFG 7.5, 768 px)",
            steps=50, guidance_scale=7.5, height=768, width=768)
_tiny_preset("tiny-sd", testing.tiny_sd_pipeline,
             "Tiny random SD-1.5-like pipeline for offline tests (64 px, 4 steps, CFG 7.5)")
_tiny_preset("tiny-sdxl", testing.tiny_sdxl_pipeline,
             "Tiny random SDXL-like pipeline for offline tests (64 px, 4 steps, CFG 7.5)")


def _any_pipeline_status() -> tuple[bool, str]:
    return True, "checked per spec: diffusers:<hub id> in the HF cache, or diffusers:<local folder>"


@register_generator("diffusers", description="Any diffusers text-to-image pipeline: diffusers:<hub id or folder>",
                    weights=_any_pipeline_status)
def build_any_pipeline(spec: GeneratorSpec, runtime: Runtime) -> DiffusersGenerator:
    """``diffusers:org/name`` (from the HF cache) or ``diffusers:/path/to/folder``; the pipeline's own defaults."""
    target = spec.variant
    if not target:
        raise SpecError("generator 'diffusers' needs a hub id or a folder: diffusers:org/name or diffusers:/path/dir")
    defaults = {**_HUB}
    if _HUB_ID.match(target) and not Path(target).expanduser().exists():
        return DiffusersGenerator(spec, runtime, source=target, defaults=defaults)
    if "path" in spec.options_dict:
        raise SpecError(f"generator {str(spec)!r} names its folder twice: use diffusers:/dir without path=")
    folder = str(Path(target).expanduser().resolve())
    return DiffusersGenerator(spec, runtime, source=folder, defaults={**defaults, "path": folder})
