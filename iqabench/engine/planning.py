"""Planning a run without side effects: ``plan_run(spec, runtime, pool) -> RunPlan``.

Planning answers *which images and which scores* a run needs: the benchmark's
plan, each planned item's image key, and which metric (at which fingerprint)
scores which images. It opens no store, sets up no processes, loads no model
and checks no metric weights, so anything that only needs the plan (a dry
run, ``iqabench study export`` of a finished run, a test) can compute it; the
:class:`~iqabench.engine.runner.Runner` calls it and adds the side effects (store,
shards, weights checks). A finished run's plan is also recorded in its
``run.json`` (:func:`planned_records`), so readers never re-plan on a machine
whose resolved device type or dtype would give other keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..analysis.identical import shared_key_pairs
from ..benchmark import Benchmark, PlannedItem, build_benchmark, check_options, plan_with
from ..contracts.errors import UserInputError
from ..contracts.generators import Generator, GeneratorPool
from ..contracts.needs import Need, collecting
from ..contracts.specs import RunSpec
from ..execution.runtime import Runtime
from ..metrics import metric_fingerprint
from ..store.store import image_key
from .preflight import run_needs


@dataclass(frozen=True)
class PlannedWork:
    """The plan before its keys: which generator makes which item, which metric scores which items, and every
    file that takes (:class:`~iqabench.contracts.needs.Need`). Computable when weights are missing, so the preflight can
    name all of them at once and ``iqabench fetch`` can list them."""

    benchmark: Benchmark
    plan: list[PlannedItem]
    generators: dict[str, Generator]  # canonical spec -> the pool's generator (built, nothing loaded)
    metric_plan: dict[str, list[int]]  # metric -> indices into ``plan``
    needs: list[Need]
    #: generator -> the baseline the benchmark compares it with (asked for while planning)
    compared: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[Need]:
        return [need for need in self.needs if not need.present]


@dataclass(frozen=True)
class RunPlan:
    """What one run will make and score; aligned lists (``plan[i]`` has image key ``image_keys[i]``)."""

    spec: RunSpec
    runtime: Runtime
    benchmark: Benchmark
    plan: list[PlannedItem]
    generators: dict[str, Generator]  # canonical spec -> the pool's generator (built, nothing loaded)
    image_keys: list[str]
    metric_plan: dict[str, list[int]]  # metric -> indices into ``plan``
    metric_fps: dict[str, str]  # metric -> fingerprint used in the score cache
    needs: list[Need]

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        return {name: gen.fingerprint() for name, gen in self.generators.items()}


def plan_work(spec: RunSpec, pool: GeneratorPool) -> PlannedWork:
    """The benchmark's plan, its generators and metric plan, and every file they will load.

    Generators declare their weights while they are built (:func:`iqabench.contracts.needs.collecting`): a
    missing file is recorded as a missing :class:`~iqabench.contracts.needs.Need` instead of failing the first
    generator, so a preflight can report all of them. Plugins named by ``spec.plugins`` must be loaded first.
    """
    with collecting() as declared:
        benchmark = build_benchmark(spec.benchmark)
        check_options(benchmark, spec.options)  # a misspelt --option fails now, not as a silent default
        # Two spellings of one spec (option order, spacing) are one generator, one manifest entry, one cache key.
        plan = [PlannedItem(pool.canonical(p.generator), p.item) for p in plan_with(benchmark, spec, pool)]
        if not plan:
            raise UserInputError(f"benchmark {spec.benchmark!r} planned no images: check --prompts, --limit and "
                                 "--seeds")
        generators: dict[str, Generator] = {}
        for planned in plan:
            if planned.generator not in generators:
                generators[planned.generator] = pool.get(planned.generator)
    metric_plan = benchmark.metrics_for(spec, plan)
    compared = {g: b for g, b in pool.compared.items() if g in generators and b in generators}
    return PlannedWork(benchmark, plan, generators, metric_plan, run_needs(benchmark, spec, metric_plan, declared),
                       compared)


def key_work(spec: RunSpec, runtime: Runtime, work: PlannedWork) -> RunPlan:
    """The image key of every planned item and the fingerprint of every metric (needs the weights present)."""
    fingerprints = {name: gen.fingerprint() for name, gen in work.generators.items()}
    keys = [image_key(fingerprints[p.generator], p.item.key_fields()) for p in work.plan]
    if shared := shared_key_pairs(work.plan, keys, work.compared):  # issue 25: each image compared with itself
        generator, baseline = next(iter(shared.items()))
        raise UserInputError(f"generator {generator!r} is its own baseline: both specs make the same images (same "
                             f"cache keys), it and {baseline!r}; pass a --baseline that changes the images (e.g. "
                             "guidance_scale=1.0)")
    metric_fps = {name: metric_fingerprint(name) for name in work.metric_plan}
    return RunPlan(spec, runtime, work.benchmark, work.plan, work.generators, keys, work.metric_plan, metric_fps,
                   work.needs)


def plan_run(spec: RunSpec, runtime: Runtime, pool: GeneratorPool | None = None) -> RunPlan:
    """The run's plan, keys and metric plan, computed from the spec and the resolved runtime only.

    Pure up to building generator objects (validating their specs; weights are looked up, never read) and the
    benchmark's own ``plan`` (which may read a prompt file). A missing file fails here with every missing piece
    named (:class:`~iqabench.engine.preflight.MissingPiecesError`); the Runner runs the preflight itself (and may
    download) before keying.
    """
    from .preflight import ensure_present

    work = plan_work(spec, pool if pool is not None else GeneratorPool(runtime))
    ensure_present(work.needs, download=False)
    return key_work(spec, runtime, work)


def planned_records(run_plan: RunPlan) -> list[dict[str, Any]]:
    """One JSON record per planned item (generator, prompt id, prompt, seed, params, image key) for run.json."""
    return [{"generator": p.generator, "prompt_id": p.item.prompt_id, "prompt": p.item.prompt,
             "seed": int(p.item.seed), "params": dict(p.item.params), "image_key": key}
            for p, key in zip(run_plan.plan, run_plan.image_keys, strict=True)]
