"""The ``iqa-adapter`` generator: a base diffusers pipeline plus a quality adapter.

Specs::

    iqa-adapter:topiq                     released preset (SDXL, topiq_nr, CC3M stats)
    iqa-adapter:hyperiqa
    iqa-adapter:topiq+laion_aes
    iqa-adapter:/path/adapter.safetensors any file; ours carry metrics/stats/base in their metadata
    iqa-adapter:/path/released.bin[metrics=topiq_nr+laion_aes,base=sdxl]

Spec options: the base model's (``steps``, ``guidance_scale``, ``height``,
``width``, ``negative_prompt``; ``seed`` for tiny bases, ``path``/``revision``/
``variant`` for hub bases), plus ``base`` (``sdxl``, ``sd15``, ``tiny-sd``, ...),
``weights_dir``, ``file``, ``metrics``, ``stats`` (a stats CSV) and the
defaults of the item params ``target`` (default ``p99``), ``scale`` (lambda,
default 0.5, the paper's: every experiment runs at 0.5 and lambda > 0.9 brings
artifacts, supplementary Sec. 16 / Fig. 13; 1.0 is only the official
``generate()`` default, ``iqa-adapter:topiq[scale=1.0]`` reaches it) and
``neg_k`` (negative quality guidance, default 0: the
unconditional branch gets the zero input; the paper's Sec. 8 uses 1, the
released code's switch 0.5).

Items may differ in ``target``, ``scale`` and ``neg_k`` inside one pipeline
call: quality tokens and lambda are per sample. Items whose scale is 0 for a
whole call run on the base model's own processors, so lambda = 0 reproduces
the base model bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from iqabench.contracts.generators import WorkItem, register_generator
from iqabench.contracts.options import Options, fingerprint_values, number, option
from iqabench.contracts.specs import GeneratorSpec, SpecError
from iqabench.execution.runtime import Runtime

from ..generator_options import GENERATION_OPTIONS, GenerationOptions
from ..quality_base import QualityGenerator
from .adapter import IQAAdapter
from .checkpoint import METADATA_KEY, PRESETS, file_sha256, load_adapter, preset_file
from .conditioning import TargetError, load_stats, resolve_target, select_stats
from .sampling import quality_pipeline_kwargs, quality_scale, uses_cfg

QUALITY_PARAMS = ("target", "scale", "neg_k")
#: lambda of the decoupled cross-attention. IQA-Adapter paper: all experiments at lambda = 0.5, lambda > 0.9
#: introduces artifacts (supplementary Sec. 16, Fig. 13). The official ``IQAAdapter.generate(scale=1.0)``
#: default (X1716/IQA-Adapter, iqa_adapter/iqa_adapter.py) is reachable as ``[scale=1.0]``.
PAPER_SCALE = 0.5
OFFICIAL_GENERATE_SCALE = 1.0
ARTIFACT_SCALE = 0.9  # above it: a one-sentence warning (the paper's artifacts threshold)


@dataclasses.dataclass(frozen=True)
class AdapterOptions(Options):
    """IQA-Adapter on a base model; every other option goes to the base model. ``target``, ``scale`` and
    ``neg_k`` are also item params (condition-sweep varies them per image)."""

    base: str | None = option(None, "base generator spec (default: the preset's or the checkpoint's, else sdxl)")
    weights_dir: str | None = option(None, "folder holding the released preset files ($IQABENCH_ADAPTER_DIR)")
    file: str | None = option(None, "file name of a preset inside weights_dir")
    metrics: str | None = option(None, "metrics the adapter was trained with, in input order: m1+m2")
    stats: str | None = option(None, "CSV of metric statistics that percentile targets refer to")
    target: str = option("p99", "quality target: a percentile (p99) or a score per metric", fingerprint=True)
    scale: float = option(PAPER_SCALE, "lambda, the strength of the quality tokens (paper: 0.5; 0: the base model "
                          "bit for bit; the official generate() default: 1.0)", rule=number(), fingerprint=True)
    neg_k: float = option(0.0, "negative quality guidance for the unconditional branch (paper Sec. 8: 1)",
                          rule=number(), fingerprint=True)


ADAPTER_OPTIONS: dict[str, Any] = AdapterOptions.defaults()


def _metrics_option(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(m.strip() for m in str(value).replace("/", "+").split("+") if m.strip())
    if not names:
        raise SpecError(f"metrics={value!r} names no metric; write e.g. metrics=topiq_nr+laion_aes")
    return names


def _stored_config_json(path: Path) -> dict[str, Any] | None:
    """Our metadata from a safetensors header (cheap: no tensor is read)."""
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY)
        stored = json.loads(text) if text else None
    except Exception as exc:  # safetensors' own error types for a corrupt header; JSONDecodeError
        raise SpecError(f"iqa-adapter: {str(path)!r} is not a readable IQA-Adapter safetensors file ({exc})") from exc
    if stored is not None and not (isinstance(stored, dict) and isinstance(stored.get("metrics"), list)):
        raise SpecError(f"iqa-adapter: {str(path)!r} has {METADATA_KEY!r} metadata without a metric list")
    return stored


class IQAAdapterGenerator(QualityGenerator):
    """The base model's pipeline, with quality tokens appended to both CFG branches."""

    item_params = frozenset(GENERATION_OPTIONS) | frozenset(QUALITY_PARAMS)
    fingerprint_class = "iqa-adapter/v1"
    options_class = AdapterOptions
    refused_bases = ("iqa-adapter",)
    refusal = "an IQA-Adapter's base cannot itself be an IQA-Adapter"
    needs_unet_cross_attention = ("IQA-Adapter adds decoupled quality keys and values to a UNet's "
                                  "cross-attention layers")

    def __init__(self, spec: GeneratorSpec, runtime: Runtime):
        if not spec.variant:
            raise SpecError("generator 'iqa-adapter' needs a preset or a file: iqa-adapter:topiq, "
                            f"iqa-adapter:/path/adapter.safetensors (presets: {', '.join(PRESETS)})")
        own, _ = self.split_options(spec)
        preset = PRESETS.get(spec.variant)
        if preset is not None:
            self.checkpoint = preset_file(spec.variant, own.get("weights_dir"), own.get("file"))
            stored = None
            metrics = _metrics_option(own.get("metrics")) or preset.metrics
            base = own.get("base") or preset.base
        else:
            self.checkpoint = Path(spec.variant).expanduser()
            if not self.checkpoint.is_file():
                raise SpecError(f"iqa-adapter: {spec.variant!r} is neither a preset ({', '.join(PRESETS)}) "
                                "nor an existing checkpoint file")
            stored = _stored_config_json(self.checkpoint)
            metrics = _metrics_option(own.get("metrics")) or (tuple(stored["metrics"]) if stored else None)
            base = own.get("base") or (stored or {}).get("base") or "sdxl"
            if not metrics:
                raise SpecError(f"{self.checkpoint} does not say which metrics it was trained with; add "
                                "[metrics=name1+name2] in the adapter's input order")
        self.metrics = metrics
        super().__init__(spec, runtime, base=str(base), where="iqa-adapter")
        if stored is not None and own.get("stats") is None:
            self.stats = [_from_stored(stored, m) for m in metrics]
        else:
            self.stats = select_stats(metrics, load_stats(own.get("stats")))
        self.adapter: IQAAdapter | None = None
        self._sha256: str | None = None
        self._opts: Mapping[str, Any] = {}
        self._check_quality_params({})  # validate the spec-level defaults now

    # -- params -------------------------------------------------------------------------------------
    def _check_quality_params(self, params: Mapping[str, Any]) -> tuple[Any, float, float]:
        target = params.get("target", self.options["target"])
        try:
            resolve_target(target, self.stats)
            scale = float(params.get("scale", self.options["scale"]))
            neg_k = float(params.get("neg_k", self.options["neg_k"]))
        except (TypeError, ValueError, OverflowError) as exc:
            raise TargetError(f"generator {self.name!r}: {exc}") from exc
        if scale < 0 or neg_k < 0:
            raise TargetError(f"generator {self.name!r}: scale and neg_k must be >= 0 (got {scale}, {neg_k})")
        if scale > ARTIFACT_SCALE:  # warnings shows each distinct message once, not once per item
            warnings.warn(f"generator {self.name!r}: scale={scale:g} is above {ARTIFACT_SCALE}, where the IQA-Adapter "
                          "paper reports artifacts (supplementary Sec. 16, Fig. 13; its experiments use 0.5)",
                          UserWarning, stacklevel=2)
        return target, scale, neg_k

    # -- protocol -------------------------------------------------------------------------------------
    def own_fingerprint(self) -> dict[str, Any]:
        """The adapter file's sha256, its metrics and stats (target, scale and neg_k are fields)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.checkpoint)
        fp: dict[str, Any] = fingerprint_values(GenerationOptions.fields(), self.options)
        fp.update({
            "adapter_sha256": self._sha256,
            "metrics": list(self.metrics),
            "stats": {s.name: s.to_dict() for s in self.stats},
        })
        return fp

    def load_pipeline(self):
        pipe = super().load_pipeline()
        self.adapter = load_adapter(self.checkpoint, pipe.unet, metrics=self.metrics,
                                    stats={s.name: s for s in self.stats})
        return pipe

    def group_key(self, item: WorkItem) -> Hashable:
        """Group items only by what changes the pipeline call (steps, size, CFG, negative prompt).

        target / scale / neg_k differ freely within one call, except that a call
        whose items all have scale 0 runs the base model's own processors.
        """
        scale = self._check_quality_params(item.params)[1]
        gen_params = tuple(sorted((k, str(v)) for k, v in item.params.items() if k in self.item_option_names))
        return gen_params, scale == 0

    def generation_options(self, params: Mapping[str, Any]) -> dict[str, Any]:
        generation = {k: v for k, v in params.items() if k not in QUALITY_PARAMS}
        self._opts = super().generation_options(generation)
        return self._opts

    def _call(self, batch: list[WorkItem], opts: Mapping[str, Any]) -> torch.Tensor:
        pipe = self.pipeline
        assert self.adapter is not None
        param = pipe.unet.dtype
        self.adapter.projection.to(device=pipe.unet.device, dtype=param)
        scales = [self._check_quality_params(item.params)[1] for item in batch]
        if all(s == 0 for s in scales):
            self._quality_batch = None
            with self.adapter.bypassed():
                return super()._call(batch, opts)
        self._quality_batch = batch
        try:
            with quality_scale(self.adapter, scales):
                return super()._call(batch, opts)
        finally:
            self._quality_batch = None

    def pipeline_kwargs(self, items: Sequence[WorkItem]) -> dict[str, Any]:
        if getattr(self, "_quality_batch", None) is None:
            return {}
        assert self.adapter is not None
        parsed = [self._check_quality_params(item.params) for item in items]
        guidance = self._opts.get("guidance_scale")
        guidance = 7.5 if guidance is None else float(guidance)  # diffusers' SD/SDXL default
        kwargs = quality_pipeline_kwargs(
            self.pipeline, self.adapter, [item.prompt for item in items],
            targets=[p[0] for p in parsed], neg_ks=[p[2] for p in parsed], guidance_scale=guidance,
            negative_prompt=self._opts.get("negative_prompt") if uses_cfg(self.pipeline, guidance) else None)
        return {"prompt": None, "negative_prompt": None, **kwargs}


def _from_stored(stored: Mapping[str, Any], metric: str):
    from .conditioning import MetricStats

    data = stored.get("stats", {})
    if metric not in data:
        return select_stats([metric], load_stats())[0]
    return MetricStats.from_dict(metric, data[metric])


def _preset_weights_status() -> tuple[bool, str]:
    """Which released presets have their file in the adapter weights folder (the base model is listed apart)."""
    from .checkpoint import PRESETS, preset_file, weights_dir

    found = []
    for name in PRESETS:
        try:
            preset_file(name)
            found.append(name)
        except Exception:
            pass
    detail = f"presets found in {weights_dir()}: {', '.join(found) or 'none'}; plus the base model (sdxl)"
    return bool(found), detail


@register_generator("iqa-adapter", description="IQA-Adapter: quality-conditioned generation "
                    "(iqa-adapter:topiq, :hyperiqa, :topiq+laion_aes, or :<checkpoint file>)",
                    weights=_preset_weights_status, options=AdapterOptions)
def build_iqa_adapter(spec: GeneratorSpec, runtime: Runtime) -> IQAAdapterGenerator:
    """Build the generator; checks the weights file exists, loads nothing heavy."""
    return IQAAdapterGenerator(spec, runtime)
