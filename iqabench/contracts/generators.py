"""The generator protocol and how spec strings become generator objects.

Implementations live in ``adapters/`` (import name ``iqabench.adapters``). A
registered factory takes ``(spec: GeneratorSpec, runtime: Runtime)`` and returns
a :class:`Generator`. Factories must be cheap: they validate options and check
that weights exist (failing with one sentence when they do not) but load
nothing heavy; models load on the first ``generate`` call, so a ``--dry-run``
or a fully cached run never touches a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from ..execution.runtime import Runtime
from .errors import EnvironmentProblem, UserInputError
from .registry import GENERATORS
from .specs import GeneratorSpec


class WeightsMissingError(EnvironmentProblem):
    """Model weights are not available locally and cannot be downloaded. The message is one sentence."""


@dataclass(frozen=True)
class WorkItem:
    """One image to make: the same item always makes the same image."""

    prompt_id: str
    prompt: str
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def key_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "seed": int(self.seed), "params": dict(sorted(self.params.items()))}


@runtime_checkable
class Generator(Protocol):
    name: str

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes pixels (weights id, scheduler, steps, cfg, dtype); keys the image cache."""

    def baseline(self) -> str | None:
        """Spec of the model this generator is compared against, or None."""

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One image per item, each independent of what else is in the batch."""


def register_generator(name: str, *, description: str = "", weights=None, overwrite: bool = False,
                       options: type | None = None, option_defaults: Mapping[str, Any] | None = None):
    """Decorator registering ``factory(spec: GeneratorSpec, runtime: Runtime) -> Generator``.

    ``options`` is the family's option dataclass (an :class:`iqabench.contracts.options.Options`), shown by
    ``iqabench list generators --options``, with ``option_defaults`` where a preset changes the defaults.
    """
    return GENERATORS.register(name, description=description, weights=weights, overwrite=overwrite,
                               options=options, option_defaults=dict(option_defaults or {}))


def build_generator(spec: str | GeneratorSpec, runtime: Runtime | None = None) -> Generator:
    from ..io import safe_load

    safe_load.install()  # whatever the generator later reads from a cache is read as tensors only
    parsed = GeneratorSpec.parse(spec) if isinstance(spec, str) else spec
    runtime = runtime or Runtime()
    entry = GENERATORS.get(parsed.family)
    generator = entry.factory(parsed, runtime)
    generator.name = str(parsed)
    return generator


def canonical_spec(spec: str | GeneratorSpec) -> str:
    """The one spelling of a spec (options sorted, values normalised): one spec, one name, one cache entry."""
    return str(GeneratorSpec.parse(spec) if isinstance(spec, str) else spec)


class GeneratorPool:
    """Each canonical generator spec of a run, built once and shared by planning, generation and analysis.

    The runner makes one pool per run and hands it to the benchmark's ``plan``
    and (through :class:`~iqabench.benchmark.AnalysisContext`) to ``analyze``:
    a benchmark asks the pool for a generator or its baseline instead of
    building generators itself, so each spec is validated and its weights
    checked once, on the run's runtime.
    """

    def __init__(self, runtime: Runtime | None = None):
        self.runtime = runtime or Runtime()
        self._built: dict[str, Generator] = {}
        #: generator -> the baseline a benchmark asked for while planning (``required``): the comparisons the run
        #: makes, checked for shared image keys once the keys are known (issue 25)
        self.compared: dict[str, str] = {}

    canonical = staticmethod(canonical_spec)

    def canonical_list(self, specs: Sequence[str | GeneratorSpec]) -> list[str]:
        """``specs`` in canonical spelling, duplicates dropped, order kept."""
        return list(dict.fromkeys(canonical_spec(s) for s in specs))

    @staticmethod
    def family(spec: str | GeneratorSpec) -> str:
        """The family of ``spec`` (``guidance`` for ``guidance:topiq_nr[base=tiny-sd]``)."""
        return (GeneratorSpec.parse(spec) if isinstance(spec, str) else spec).family

    @staticmethod
    def wrap(family: str, variant: str | None, base: str | GeneratorSpec, **options: Any) -> str:
        """The canonical spec of a ``family:variant`` generator wrapping ``base`` (e.g. guidance on a metric).

        Wrapper families take the base as ``base=family[:variant]`` and the base's own options beside their own
        (see :class:`adapters.quality_base.QualityGenerator`), so ``tiny-sd[steps=2]`` wrapped by guidance is
        ``guidance:m[alpha=..,base=tiny-sd,steps=2]``: one spelling, one cache entry.
        """
        parsed = GeneratorSpec.parse(base) if isinstance(base, str) else base
        base_name = parsed.family + (f":{parsed.variant}" if parsed.variant else "")
        merged = {**parsed.options_dict, **options, "base": base_name}
        return canonical_spec(str(GeneratorSpec(family, variant, tuple(sorted(merged.items())))))

    def get(self, spec: str | GeneratorSpec) -> Generator:
        """The generator of ``spec``, built on first request (validates options and weights, loads nothing)."""
        name = canonical_spec(spec)
        if name not in self._built:
            self._built[name] = build_generator(name, self.runtime)
        return self._built[name]

    def baseline(self, spec: str | GeneratorSpec, override: str | None = None, *, required: bool = True) -> str | None:
        """What ``spec`` is compared against, canonical: ``override`` (``--baseline``) if given, else the
        generator's own baseline. With ``required``, a generator that names none fails with one sentence."""
        if override:
            if required:
                self.compared[canonical_spec(spec)] = canonical_spec(override)
            return canonical_spec(override)
        generator = self.get(spec)
        own = generator.baseline()
        reason = getattr(generator, "no_baseline_reason", None)  # e.g. FLUX-schnell: no "without guidance"
        if own is None and required and reason:
            raise UserInputError(reason)
        if own is None and required:
            raise UserInputError(f"generator {canonical_spec(spec)!r} names no baseline to compare against; pass "
                                 "--baseline SPEC (e.g. --baseline tiny-sd[guidance_scale=1.0])")
        if own is not None and required:
            self.compared[canonical_spec(spec)] = canonical_spec(own)
        return None if own is None else canonical_spec(own)

    def __contains__(self, spec: object) -> bool:
        return isinstance(spec, (str, GeneratorSpec)) and canonical_spec(spec) in self._built

    def __len__(self) -> int:
        return len(self._built)
