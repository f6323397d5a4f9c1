"""The benchmark plugin protocol: plan, metrics, analyze (the Result types live in :mod:`iqabench.contracts.results`).

A benchmark states its plan (which images, from which generators) and its
analysis (tables, figures, grids from what the Store holds). Generation,
caching, scoring, resume and rendering are the core's job, as pytorch-grad-cam
keeps hooking and resizing in its base class so a CAM method is one method.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .analysis.identical import PairCheck, PixelDigests, identical_pairs
from .contracts.errors import UserInputError
from .contracts.generators import GeneratorPool, WorkItem
from .contracts.registry import BENCHMARKS
from .contracts.results import ImageRef, Result

if TYPE_CHECKING:  # pragma: no cover
    from .contracts.specs import RunSpec
    from .execution.runtime import Runtime
    from .store.store import Store


@dataclass(frozen=True)
class PlannedItem:
    """A work item bound to the generator spec that makes it."""

    generator: str
    item: WorkItem


@dataclass
class AnalysisContext:
    """What a benchmark's ``analyze`` may read: the plan, each item's image key, and cached scores."""

    store: Store
    spec: RunSpec
    plan: list[PlannedItem]
    image_keys: list[str]  # aligned with ``plan``
    metric_fingerprints: dict[str, str]  # metric name -> fingerprint used in the score cache
    #: generator spec -> the spec it is compared against (``--baseline`` applied; None where it names none)
    baselines: dict[str, str | None] = field(default_factory=dict)
    #: the run's generators, each built once: ask it, never ``build_generator`` (see GeneratorPool)
    generators: GeneratorPool = field(default_factory=GeneratorPool)
    #: the run's resolved device/dtype and its batch policy: a benchmark's own batched pass (features, pair
    #: scores, detectors) uses ``runtime.batch.for_pass()`` and ``runtime.device``, never a Runtime of its own
    runtime: Runtime | None = None

    def __post_init__(self) -> None:
        if self.runtime is None:
            self.runtime = self.generators.runtime
    _identical: dict[str, PairCheck] | None = field(default=None, repr=False)
    _pixels: PixelDigests | None = field(default=None, repr=False)

    def scores(self, metric: str) -> dict[str, float | None]:
        """image key -> score (None where scoring failed) for every planned image scored with ``metric``."""
        return self.store.get_scores(set(self.image_keys), metric, self.metric_fingerprints[metric])

    def score_errors(self, metric: str) -> dict[str, str]:
        return self.store.get_score_errors(set(self.image_keys), metric, self.metric_fingerprints[metric])

    def failures(self) -> dict[str, str]:
        return self.store.failures(self.image_keys)

    def identical_to_baseline(self) -> dict[str, PairCheck]:
        """generator -> how many of its images are pixel-identical to its baseline's (see
        :mod:`iqabench.analysis.identical`); a comparison identical throughout has no effect to measure and must not
        be reported as 0."""
        if self._identical is None:
            self._identical = self.identical_to(self.baselines)
        return self._identical

    def identical_to(self, compared: dict[str, str | None]) -> dict[str, PairCheck]:
        """generator -> :class:`PairCheck` against the spec it is compared with (a benchmark's own pairs, e.g.
        adversarial-gradcam's guided runs against their base)."""
        return identical_pairs(self.plan, self.image_keys, compared, self.pixels)

    @property
    def pixels(self) -> PixelDigests:
        """Each image's pixel digest, decoded once per analysis (see :mod:`iqabench.analysis.identical`)."""
        if self._pixels is None:
            self._pixels = PixelDigests(self.store.image_path)
        return self._pixels


class Benchmark(Protocol):
    name: str
    description: str

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        """Which images this benchmark needs, from which generators (ask ``generators`` for baselines)."""

    def metrics_for(self, spec: RunSpec, plan: list[PlannedItem]) -> dict[str, list[int]]:
        """Metric name -> indices into ``plan`` to score with it (the core scores, caches and resumes)."""

    def analyze(self, ctx: AnalysisContext) -> Result:
        """Tables, figures and grids from what the Store holds."""


# Options the core itself reads from RunSpec.options, whatever the benchmark (the CLI sets them from flags).
# Execution settings (--compile, --batch-size, ...) are not options: they are an iqabench.contracts.execution.Execution.
CORE_OPTIONS: dict[str, str] = {
    "prompt_column": "column holding prompts in CSV/TSV/JSONL (--prompt-column)",
}


class UnknownOptionError(UserInputError):
    """An ``--option`` key the benchmark does not declare; the message suggests close matches."""


def declared_options(benchmark: Any) -> dict[str, str] | None:
    """The benchmark's own options (name -> one-line help), or None when it declares none (plugins may not)."""
    declared = getattr(benchmark, "options", None)
    return None if declared is None else dict(declared)


def check_options(benchmark: Any, options: dict[str, Any]) -> None:
    """Refuse option keys the benchmark does not declare, before anything is planned.

    A typo such as ``--option scale=1,2`` for ``scales`` used to be ignored
    silently, and the run used the defaults. Benchmarks that declare nothing
    (``options = None``, e.g. older plugins) keep accepting any key.
    """
    import difflib

    declared = declared_options(benchmark)
    if declared is None:
        return
    known = {**CORE_OPTIONS, **declared}
    for key in options:
        if key in known:
            continue
        close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        core = ", ".join(sorted(CORE_OPTIONS))
        own = (f"Its options: {', '.join(sorted(declared))}; every benchmark also accepts the core options: {core}"
               if declared else f"It has no options of its own; every benchmark accepts the core options: {core}")
        raise UnknownOptionError(
            f"benchmark {benchmark.name!r} has no option {key!r}.{hint} {own} "
            "(see `iqabench list benchmarks --options`)"
        )


def register_benchmark(name: str, *, description: str = "", overwrite: bool = False):
    """Decorator registering a benchmark class (instantiated with no arguments)."""
    return BENCHMARKS.register(name, description=description, overwrite=overwrite)


def plan_with(benchmark: Benchmark, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
    """``benchmark.plan(spec, generators)``; a plugin written before the pool existed (``plan(self, spec)``)
    is still called the old way."""
    parameters = inspect.signature(benchmark.plan).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional):
        return benchmark.plan(spec, generators)
    return benchmark.plan(spec)


def build_benchmark(name: str) -> Benchmark:
    entry = BENCHMARKS.get(name)
    bench = entry.factory()
    bench.name = name
    return bench


class BaseBenchmark:
    """Defaults most benchmarks share: prompts x seeds work items and every NR metric on every image."""

    name = ""
    description = ""
    # name -> one-line help for every --option key the benchmark reads; None: not declared (any key accepted)
    options: dict[str, str] | None = None

    def work_items(self, spec: RunSpec, params: dict[str, Any] | None = None) -> list[WorkItem]:
        from .io.prompts import load_prompts

        prompts = load_prompts(spec.prompts, limit=spec.limit, column=spec.options.get("prompt_column"))
        return [WorkItem(p.prompt_id, p.text, seed, dict(params or {})) for p in prompts for seed in spec.seeds]

    def metrics_for(self, spec: RunSpec, plan: list[PlannedItem]) -> dict[str, list[int]]:
        from .metrics import metric_info, parse_metric_list

        names = parse_metric_list(spec.metrics)
        full_reference = [n for n in names if metric_info(n).mode == "FR"]
        if full_reference:
            raise UserInputError(
                f"benchmark {self.name!r} scores single images, but {', '.join(full_reference)} "
                "is full-reference; use no-reference metrics (e.g. piqe, entropy) or the fr-distances benchmark"
            )
        return {n: list(range(len(plan))) for n in names}


__all__ = ["AnalysisContext", "BaseBenchmark", "Benchmark", "ImageRef", "PlannedItem", "Result", "build_benchmark",
           "plan_with", "register_benchmark"]
