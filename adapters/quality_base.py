""":class:`QualityGenerator`: the one way to wrap a base diffusers generator (IQA-Adapter, guidance, ACPO).

Every quality-aware generator here is "the base model, plus something that
changes its pixels". What they share lives here, once:

* **option split** — the family's own options (``own_options``) stay with it;
  every other spec option goes to the base model, so
  ``guidance:topiq_nr[base=sdxl,steps=20,variant=fp16]`` runs SDXL's fp16
  files at 20 steps;
* **recursion refusal** — a family cannot wrap the families in ``refused_bases``
  (an adapter on an adapter has no defined meaning);
* **baseline** — the base model with the same generation options, so RelGain's
  paired statistics compare like with like;
* **fingerprint** — the base's fingerprint plus this class's label, the base
  spec, its own options declared ``fingerprint`` and :meth:`own_fingerprint`:
  a cache key changes whenever the base or the wrapper changes pixels;
* **one option table** — the base's option fields and the family's own ones are
  checked, passed to the pipeline and overridden by items the same way
  (:mod:`iqabench.contracts.options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from iqabench.contracts.generators import build_generator
from iqabench.contracts.options import Options, fingerprint_values, option_fields, short_text
from iqabench.contracts.specs import GeneratorSpec, SpecError
from iqabench.execution.runtime import Runtime

from .diffusers_base import DiffusersGenerator
from .generator_options import base_model_spec


class QualityGenerator(DiffusersGenerator):
    """A :class:`DiffusersGenerator` that runs a base generator's pipeline with something added.

    Subclasses set ``options_class`` (their typed options; ``own_options``, the
    names and defaults, follows from it) and ``refused_bases``, parse what they
    need from the spec, then call ``super().__init__(spec, runtime)`` (pass
    ``base=`` only when it does not come from the spec's ``base`` option). They override
    :meth:`own_fingerprint` (everything of theirs that changes pixels) and, when
    they change the pipeline, :meth:`load_pipeline` (start from ``super()``'s).
    """

    #: the family's typed options (a dataclass); ``settings`` holds the validated values
    options_class: ClassVar[type[Options] | None] = None
    #: the family's own options and their defaults (``options_class.defaults()``); every other spec option
    #: belongs to the base model
    own_options: ClassVar[Mapping[str, Any]] = {}
    #: base families this one cannot wrap; the message names the offending base
    refused_bases: ClassVar[tuple[str, ...]] = ()
    #: how the refusal reads, e.g. "the base of IQA guidance cannot itself be a guidance generator"
    refusal: ClassVar[str] = "cannot wrap a {family} generator"
    #: what this family changes in the base, when it needs the UNet's cross-attention layers (IQA-Adapter: its
    #: decoupled attention processors; ACPO: its LoRA); None when any pipeline will do (gradient guidance)
    needs_unet_cross_attention: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The typed options are the one source of the option names: a subclass sets ``options_class`` only.
        if cls.options_class is not None and "own_options" not in cls.__dict__:
            cls.own_options = cls.options_class.defaults()

    def __init__(self, spec: GeneratorSpec, runtime: Runtime, *, base: str | None = None, where: str | None = None):
        """``base``: the base model's spec; by default the spec's ``base=`` option, else ``own_options["base"]``."""
        where = where or f"generator {short_text(str(spec))!r}"
        if base is None:
            base = self.split_options(spec)[0].get("base", self.own_options.get("base"))
            if not base:
                raise SpecError(f"{where}: name the base model, e.g. [base=sdxl]")
        self.base_spec = GeneratorSpec.parse(str(base))
        if self.base_spec.family in self.refused_bases:
            raise SpecError(f"{where}: {self.refusal.format(family=self.base_spec.family, base=str(self.base_spec))}")
        _, base_options = self.split_options(spec)
        base_gen = build_generator(self.base_spec.with_options(**base_options), runtime)
        if not isinstance(base_gen, DiffusersGenerator):
            raise SpecError(f"{where}: base {str(self.base_spec)!r} is not a diffusers pipeline generator")
        own_fields = option_fields(self.options_class) if self.options_class else {}
        family = base_gen.pipeline_family
        if self.needs_unet_cross_attention and not family.unet:
            raise SpecError(f"{where}: {unet_refusal(self.needs_unet_cross_attention, str(self.base_spec), family)}")
        super().__init__(spec, runtime, source=base_gen.source, defaults={**base_gen.options, **self.own_options},
                         tiny_builder=base_gen.tiny_builder, options={**base_gen.option_fields, **own_fields})
        self._base_gen = base_gen
        self.implied_options = base_gen.implied_options  # a spec built on this one leaves them out too
        self.options["base"] = str(self.base_spec)
        self.settings = self.options_class.parse(self.options, where) if self.options_class else None

    @classmethod
    def split_options(cls, spec: GeneratorSpec) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(own, base)``: the spec's options of this family, and the ones for the base model."""
        own = {k: v for k, v in spec.options if k in cls.own_options}
        return own, {k: v for k, v in spec.options if k not in cls.own_options}

    @property
    def base_generator(self) -> DiffusersGenerator:
        return self._base_gen

    # -- protocol ---------------------------------------------------------------------------------------
    def own_fingerprint(self) -> dict[str, Any]:
        """Override point: this wrapper's settings that change pixels (file hashes, strengths, ...)."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        """The base model's fingerprint, this class's label, the base spec and :meth:`own_fingerprint`."""
        fp = dict(self._base_gen.fingerprint())
        fp.update({"class": self.fingerprint_class, "base": str(self.base_spec)})
        if self.options_class is not None:  # own options declared ``fingerprint`` (the base's are in its own)
            fp.update(fingerprint_values(self.options_class.fields(), self.options))
        fp.update(self.own_fingerprint())
        return fp

    def baseline(self) -> str | None:
        """The base model with the same generation options (what RelGain compares against)."""
        return base_model_spec(self.base_spec, self.options, self._base_gen.options, self.own_options,
                               self._base_gen.implied_options)

    #: the baseline is the base model itself, whatever its family: no family note, always a baseline
    baseline_note = None
    no_baseline_reason = None

    def load_pipeline(self):
        """The base generator's pipeline (so an ``acpo:`` base comes with its LoRA); subclasses add theirs."""
        return self._base_gen.load_pipeline()


def unet_refusal(needs: str, base: str, family: Any) -> str:
    """Why a method that acts on a UNet's cross-attention cannot run on ``base`` (one sentence, shared by the
    generator and its training command)."""
    return (f"{needs}, but base {base!r} is a {family.label}, so there is nothing to attach it to; use an SD "
            "1.x/2.x or SDXL base")


def require_unet_base(base: str, needs: str, where: str, runtime: Runtime | None = None) -> None:
    """Refuse a training ``--base`` without UNet cross-attention before anything is loaded (else the training
    loads the whole pipeline and fails on ``pipe.unet``). Builds the base generator only, its files declared,
    not required: a preset's family is known without them (adapters/families.py)."""
    from iqabench.contracts.needs import collecting

    with collecting():
        generator = build_generator(base, runtime or Runtime(device="cpu", dtype="fp32"))
    family = getattr(generator, "pipeline_family", None)
    if family is not None and not family.unet:
        raise SpecError(f"{where}: {unet_refusal(needs, str(GeneratorSpec.parse(base)), family)}")
