"""Planning a run without side effects: ``plan_run(spec, runtime, pool) -> RunPlan``.

Planning answers *which images and which scores* a run needs: the benchmark's
plan, each planned item's image key, and which metric (at which fingerprint)
scores which images. It opens no store, sets up no processes, loads no model
and checks no metric weights, so anything that only needs the plan (a dry
run, ``iqabench study export`` of a finished run, a test) can compute it; the
:class:`~iqabench.runner.Runner` calls it and adds the side effects (store,
shards, weights checks). A finished run's plan is also recorded in its
``run.json`` (:func:`planned_records`), so readers never re-plan on a machine
whose resolved device type or dtype would give other keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .benchmark import Benchmark, PlannedItem, build_benchmark, check_options, plan_with
from .errors import UserInputError
from .generators import Generator, GeneratorPool
from .metrics import metric_fingerprint
from .runtime import Runtime
from .specs import RunSpec
from .store import image_key


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

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        return {name: gen.fingerprint() for name, gen in self.generators.items()}


def plan_run(spec: RunSpec, runtime: Runtime, pool: GeneratorPool | None = None) -> RunPlan:
    """The run's plan, keys and metric plan, computed from the spec and the resolved runtime only.

    Pure up to building generator objects (validating their specs; no weights are read) and the benchmark's
    own ``plan`` (which may read a prompt file). Plugins named by ``spec.plugins`` must be loaded first.
    """
    pool = pool if pool is not None else GeneratorPool(runtime)
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
    fingerprints = {name: gen.fingerprint() for name, gen in generators.items()}
    keys = [image_key(fingerprints[p.generator], p.item.key_fields()) for p in plan]
    metric_plan = benchmark.metrics_for(spec, plan)
    metric_fps = {name: metric_fingerprint(name) for name in metric_plan}
    return RunPlan(spec, runtime, benchmark, plan, generators, keys, metric_plan, metric_fps)


def planned_records(run_plan: RunPlan) -> list[dict[str, Any]]:
    """One JSON record per planned item (generator, prompt id, prompt, seed, params, image key) for run.json."""
    return [{"generator": p.generator, "prompt_id": p.item.prompt_id, "prompt": p.item.prompt,
             "seed": int(p.item.seed), "params": dict(p.item.params), "image_key": key}
            for p, key in zip(run_plan.plan, run_plan.image_keys, strict=True)]
