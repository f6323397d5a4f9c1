"""The run pipeline: plan -> generate -> score -> analyze -> report, each stage resumable from the Store.

This is the Python API behind ``iqabench run`` (the CLI only parses and
prints). Every stage reads only what the stage before it wrote to the Store:
images are keyed by content, scores by (image, metric, metric fingerprint), so
re-running an interrupted run skips what is done, and two benchmarks over the
same generator, prompts and seeds generate each image once.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .benchmark import AnalysisContext, PlannedItem, Result, build_benchmark, check_options, plan_with
from .distributed import distributed_shard, owned_keys, wait_for_everyone
from .generators import Generator, GeneratorPool
from .image_checks import generated_image_problem
from .manifest import default_run_id, run_manifest
from .metrics import (
    Metric,
    MetricContractError,
    MetricUnavailableError,
    build_metric,
    check_available,
    metric_fingerprint,
)
from .oom import free_accelerator_memory, is_out_of_memory
from .registry import load_plugin
from .runtime import Runtime
from .specs import RunSpec
from .store import CorruptImageError, Store, image_key

ProgressFactory = Callable[[str, int], "ProgressTask"]


class ProgressTask:
    """Minimal progress interface; the CLI plugs rich in, the API default prints nothing."""

    def advance(self, n: int = 1) -> None:  # pragma: no cover - trivial
        pass

    def close(self) -> None:  # pragma: no cover - trivial
        pass


def _silent(_: str, __: int) -> ProgressTask:
    return ProgressTask()


@dataclass
class PlanSummary:
    n_items: int
    n_unique_images: int
    n_cached_images: int
    n_to_generate: int
    per_generator: dict[str, dict[str, int]]
    n_scores_needed: int
    n_scores_cached: int

    def lines(self) -> list[str]:
        out = [
            f"{self.n_items} planned items -> {self.n_unique_images} unique images: "
            f"{self.n_cached_images} cached, {self.n_to_generate} to generate",
            f"{self.n_scores_needed} scores needed: {self.n_scores_cached} cached, "
            f"{self.n_scores_needed - self.n_scores_cached} to compute",
        ]
        for gen, counts in self.per_generator.items():
            out.append(f"  {gen}: {counts['images']} images, {counts['cached']} cached")
        return out


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    plan: PlanSummary
    result: Result | None = None
    report: Path | None = None
    failures: dict[str, str] = field(default_factory=dict)
    n_images: int = 0  # unique planned images
    missing_images: int = 0  # planned images that do not exist after the run (generation failed)
    n_scores: int = 0  # planned (image, metric) scores
    missing_scores: dict[str, int] = field(default_factory=dict)  # metric -> scores absent or failed

    @property
    def complete(self) -> bool:
        """Every planned image and every planned score exists: the one condition for exit code 0."""
        return self.missing_images == 0 and not any(self.missing_scores.values())

    def incomplete_summary(self) -> str:
        """What is missing and how to retry, in one paragraph for the terminal."""
        parts = []
        if self.missing_images:
            parts.append(f"{self.missing_images} of {self.n_images} image(s) failed to generate")
        missing = sum(self.missing_scores.values())
        if missing:
            per_metric = ", ".join(f"{m}: {n}" for m, n in self.missing_scores.items() if n)
            parts.append(f"{missing} of {self.n_scores} score(s) are missing or failed ({per_metric})")
        return (f"run incomplete: {'; '.join(parts)}; the report's failures table says why. Re-run the same "
                "command to retry only what failed, or pass --allow-failures to accept a partial run.")


class Runner:
    """Executes one RunSpec against one Store."""

    def __init__(self, spec: RunSpec, store: Store | str | os.PathLike[str], *, run_id: str | None = None,
                 progress: ProgressFactory = _silent, log: Callable[[str], None] = lambda _: None,
                 shard: tuple[int, int] | None = None):
        self.spec = spec
        self.store = store if isinstance(store, Store) else Store(store)
        for plugin in spec.plugins:
            load_plugin(plugin)
        self._distributed = None
        if shard is None:
            self._distributed, shard = distributed_shard()
        self.shard = shard
        device = spec.device
        if self._distributed is not None and device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{self._distributed.local_process_index}"  # one GPU per process
        self.runtime = Runtime(device, spec.dtype, spec.batch_size, compile=bool(spec.options.get("compile", False)),
                               attention_slicing=bool(spec.options.get("attention_slicing", False)))
        self.run_id = run_id or default_run_id(spec)
        self.store.run_dir(self.run_id)  # a bad --run-id fails now (also under --dry-run), not after planning
        self.progress = progress if self.is_main_process else _silent
        self.log = log
        self.benchmark = build_benchmark(spec.benchmark)
        check_options(self.benchmark, spec.options)  # a misspelt --option fails now, not as a silent default
        # Every generator spec is built once, here (validates specs and weights, loads nothing heavy), and shared
        # with the benchmark's plan and analysis.
        self.pool = GeneratorPool(self.runtime)
        self.plan: list[PlannedItem] = plan_with(self.benchmark, spec, self.pool)
        if not self.plan:
            raise ValueError(f"benchmark {spec.benchmark!r} planned no images: check --prompts, --limit and --seeds")
        self.generators: dict[str, Generator] = {}
        for planned in self.plan:
            if planned.generator not in self.generators:
                self.generators[planned.generator] = self.pool.get(planned.generator)
        fingerprints = {name: gen.fingerprint() for name, gen in self.generators.items()}
        self.image_keys = [image_key(fingerprints[p.generator], p.item.key_fields()) for p in self.plan]
        self.metric_plan = self.benchmark.metrics_for(spec, self.plan)
        self.metric_fps = {name: metric_fingerprint(name) for name in self.metric_plan}
        for name in self.metric_plan:
            check_available(name)  # a metric that cannot load fails now, not after hours of generation
        self._metrics: dict[str, Metric] = {}
        self._quarantined_while_scoring: list[str] = []

    # -- plan ------------------------------------------------------------------------------
    def _unique(self) -> dict[str, PlannedItem]:
        unique: dict[str, PlannedItem] = {}
        for key, planned in zip(self.image_keys, self.plan, strict=True):
            unique.setdefault(key, planned)
        return unique

    def _mine(self, keys: Sequence[str]) -> list[str]:
        """This process's share of a key list (see :func:`.distributed.owned_keys`)."""
        return owned_keys(keys, self.shard)

    def _score_targets(self) -> dict[str, list[str]]:
        return {m: sorted({self.image_keys[i] for i in idx}) for m, idx in self.metric_plan.items()}

    def summarize_plan(self) -> PlanSummary:
        unique = self._unique()
        cached = {k for k in unique if self.store.has_image(k)}
        per_gen: dict[str, dict[str, int]] = defaultdict(lambda: {"images": 0, "cached": 0})
        for key, planned in unique.items():
            per_gen[planned.generator]["images"] += 1
            per_gen[planned.generator]["cached"] += key in cached
        needed = cached_scores = 0
        for metric, keys in self._score_targets().items():
            needed += len(keys)
            present = self.store.get_scores(keys, metric, self.metric_fps[metric])
            cached_scores += sum(value is not None for value in present.values())  # errors are retried
        return PlanSummary(len(self.plan), len(unique), len(cached), len(unique) - len(cached), dict(per_gen),
                           needed, cached_scores)

    # -- stages ----------------------------------------------------------------------------
    @property
    def is_main_process(self) -> bool:
        return self.shard[0] == 0

    def _reusable(self, key: str, planned: PlannedItem) -> bool:
        """Is the cached image for ``key`` there and sound? A damaged one is moved aside (logged once)."""
        path = self.store.image_path(key)
        self.store.refuse_symlinks(path.parent)  # a linked folder stops the run (StoreError); nothing is moved
        if not self.store.has_image(key) and not path.is_symlink():
            return False
        why = self.store.check_image(key, decode="unrecorded")
        if why is None:
            return True
        self._set_aside(key, why, planned)
        return False

    def _set_aside(self, key: str, why: str, planned: PlannedItem | None = None) -> None:
        planned = planned or self._unique()[key]
        moved = self.store.quarantine_image(key, why)
        self.log(f"cached image of {planned.item.prompt_id} seed {planned.item.seed} ({planned.generator}) {why}; "
                 f"moved to {moved or 'cache/quarantine/'} and regenerating it")

    def generate(self) -> None:
        unique = self._unique()
        todo = [k for k in self._mine(list(unique)) if not self._reusable(k, unique[k])]
        if not todo:
            return
        by_generator: dict[str, list[str]] = defaultdict(list)
        for key in todo:
            by_generator[unique[key].generator].append(key)
        task = self.progress("generating", len(todo))
        # PNG encoding and the atomic write run on a background thread, off the generation loop.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iqabench-writer") as writer:
            pending: list[Future] = []
            try:
                for gen_name, keys in by_generator.items():
                    generator = self.generators[gen_name]
                    start = 0
                    while start < len(keys):
                        batch = keys[start : start + self.runtime.batch_size]
                        done = self._generate_batch(generator, batch, unique, writer, pending)
                        start += done
                        task.advance(done)
                    self._drain(pending, block=False)
                self._drain(pending, block=True)
            finally:
                task.close()

    @staticmethod
    def _drain(pending: list[Future], *, block: bool) -> None:
        """Surface write errors; keep at most a few encoded images in flight."""
        while pending and (block or pending[0].done() or len(pending) > 8):
            pending.pop(0).result()

    def _generate_batch(self, generator: Generator, keys: list[str], unique: dict[str, PlannedItem],
                        writer: ThreadPoolExecutor, pending: list[Future]) -> int:
        """Generate ``keys``; returns how many were handled (fewer after an out-of-memory back-off)."""
        items = [unique[k].item for k in keys]
        try:
            images = generator.generate(items)
        except Exception as exc:
            if is_out_of_memory(exc) and self.runtime.batch_size > 1:
                self.runtime.batch_size = max(1, self.runtime.batch_size // 2)
                self.log(f"out of memory with {len(keys)} images per batch; retrying with "
                         f"{self.runtime.batch_size} (pass --batch-size {self.runtime.batch_size} next time)")
                free_accelerator_memory()
                return 0
            if len(keys) == 1:
                self.store.record_failure(keys[0], "generate", _one_line(exc))
                self.log(f"generation failed for {items[0].prompt_id} seed {items[0].seed}: {_one_line(exc)}")
                return 1
            handled = 0
            while handled < len(keys):  # isolate the failing item(s); the rest of the batch still lands
                # 0 means an out-of-memory back-off shrank the batch: retry the same item, do not skip it.
                handled += self._generate_batch(generator, [keys[handled]], unique, writer, pending)
            return len(keys)
        if len(images) != len(items):
            raise RuntimeError(f"generator {generator.name!r} returned {len(images)} images for {len(items)} items")
        check = getattr(generator, "check_outputs", True)  # False for generators that return real photos
        for key, item, image in zip(keys, items, images, strict=True):
            problem = generated_image_problem(image) if check else None
            if problem is not None:  # recorded as a failure, never cached as a valid image
                self.store.record_failure(key, "generate", problem)
                self.log(f"generation failed for {item.prompt_id} seed {item.seed}: {problem}")
                continue
            pending.append(writer.submit(self.store.put_image, key, image))
        self._drain(pending, block=False)
        return len(keys)

    def score(self) -> None:
        targets = self._score_targets()
        needed: dict[str, list[str]] = defaultdict(list)  # image key -> metrics still to compute
        for metric, keys in targets.items():
            present = self.store.get_scores(keys, metric, self.metric_fps[metric])
            for key in self._mine(keys):
                # A cached error (None) is retried, as generation failures are: it may have been transient
                # (out of memory, a driver hiccup) and would otherwise stick in the shared cache for good.
                if present.get(key) is None and self.store.has_image(key):
                    needed[key].append(metric)
        if not needed:
            return
        metrics = self._metrics
        task = self.progress("scoring", len(needed))
        try:
            keys = sorted(needed)
            for start in range(0, len(keys), self.runtime.batch_size):
                batch = keys[start : start + self.runtime.batch_size]
                self._score_batch(batch, needed, metrics)
                task.advance(len(batch))
        finally:
            task.close()

    def _score_batch(self, keys: list[str], needed: dict[str, list[str]], metrics: dict[str, Metric]) -> None:
        # Decode each image once for all the metrics that need it; group by size so batches stack.
        by_size: dict[tuple[int, int], list[tuple[str, torch.Tensor]]] = defaultdict(list)
        for key in keys:
            try:
                tensor = _to_tensor(self.store.load_image(key))
            except (OSError, SyntaxError, ValueError) as exc:  # PIL's decode errors; CorruptImageError for links
                why = exc.reason if isinstance(exc, CorruptImageError) else f"does not decode ({_one_line(exc)})"
                self._set_aside(key, why)  # regenerated by the next round of execute(), then scored
                self._quarantined_while_scoring.append(key)
                continue
            by_size[tuple(tensor.shape[-2:])].append((key, tensor))
        for group in by_size.values():
            metric_names = sorted({m for key, _ in group for m in needed[key]})
            for name in metric_names:
                members = [(k, t) for k, t in group if name in needed[k]]
                if name not in metrics:
                    metrics[name] = self._build_metric(name)
                self.store.put_scores(self._score_with(metrics[name], members))

    def _score_with(self, metric: Metric, members: list[tuple[str, torch.Tensor]]) -> list[tuple]:
        fp = self.metric_fps[metric.name]
        batch = torch.stack([t for _, t in members])
        try:
            values = metric.score(batch).tolist()
            return [(k, metric.name, fp, _finite_or_none(v), None if np.isfinite(v) else "non-finite score")
                    for (k, _), v in zip(members, values, strict=True)]
        except MetricContractError:
            raise  # the metric itself is wrong, not one image: stop before any of its scores is stored
        except Exception as exc:
            if is_out_of_memory(exc):
                free_accelerator_memory()
            if len(members) == 1:
                key = members[0][0]
                return [(key, metric.name, fp, None, _one_line_tb())]
        rows = []
        for member in members:  # find which image breaks the metric; score the others
            rows.extend(self._score_with(metric, [member]))
        return rows

    def _build_metric(self, name: str) -> Metric:
        try:
            return build_metric(name, self.runtime)
        except MetricUnavailableError:
            raise
        except Exception as exc:
            raise MetricUnavailableError(f"metric {name!r} could not be built: its factory raised "
                                         f"{_one_line(exc)}{_where(exc)}") from exc

    def build_metrics(self) -> None:
        """Build every metric that has scores left to compute, before generation: a factory that raises
        fails the run now, not after hours of generation (``check_available`` only sees missing weights)."""
        for metric, keys in self._score_targets().items():
            if metric in self._metrics:
                continue
            present = self.store.get_scores(keys, metric, self.metric_fps[metric])
            if any(present.get(k) is None for k in self._mine(keys)):
                self._metrics[metric] = self._build_metric(metric)

    def completeness(self, outcome: RunOutcome) -> None:
        """Fill the outcome's counts of planned images and scores that do not exist (for the exit code)."""
        unique = list(self._unique())
        outcome.n_images = len(unique)
        outcome.missing_images = sum(not self.store.has_image(k) for k in unique)
        outcome.n_scores, outcome.missing_scores = 0, {}
        for metric, keys in self._score_targets().items():
            present = self.store.get_scores(keys, metric, self.metric_fps[metric])
            outcome.n_scores += len(keys)
            outcome.missing_scores[metric] = sum(present.get(k) is None for k in keys)

    def _wait_for_everyone(self) -> None:
        wait_for_everyone(self._distributed)

    def analyze(self) -> Result:
        baselines = {name: self.pool.baseline(name, self.spec.baseline, required=False) for name in self.generators}
        ctx = AnalysisContext(self.store, self.spec, self.plan, self.image_keys, self.metric_fps, baselines,
                              self.pool)
        return self.benchmark.analyze(ctx)

    # -- whole run -------------------------------------------------------------------------
    def manifest(self, status: str, plan: PlanSummary | None = None, **extra: Any) -> dict[str, Any]:
        """The run.json document for this run at ``status`` (see :mod:`.manifest`)."""
        generators = {name: {"fingerprint": gen.fingerprint(), "baseline": gen.baseline()}
                      for name, gen in self.generators.items()}
        return run_manifest(self.run_id, self.spec, status, self.runtime, generators, self.metric_fps,
                            None if plan is None else plan.__dict__, **extra)

    def execute(self, *, dry_run: bool = False) -> RunOutcome:
        """Plan, generate, score and analyse; stops at the :class:`Result` (persisting and rendering it is
        :func:`iqabench.api.execute`'s job, so the runner never imports the report stage)."""
        plan = self.summarize_plan()
        outcome = RunOutcome(self.run_id, self.store.run_dir(self.run_id), plan)
        if dry_run:
            return outcome
        self.store.sweep_temp_files()
        if self.is_main_process:
            self.store.write_run_json(self.run_id, self.manifest("running", plan))
        self.build_metrics()
        self.generate()
        self._wait_for_everyone()  # every image exists before anyone scores
        self.score()
        self._wait_for_everyone()
        if self._quarantined_while_scoring and self._distributed is None:
            # Images that decoded badly while scoring were moved aside: make and score them once more now.
            self._quarantined_while_scoring.clear()
            self.generate()
            self.score()
        if not self.is_main_process:
            return outcome  # workers stop here; the main process analyses once all shards are in
        result = self.analyze()
        random_weights = [name for name, gen in self.generators.items() if getattr(gen, "tiny_builder", None)]
        if random_weights:
            result.notes.insert(0, f"Smoke run: {', '.join(random_weights)} use randomly initialised tiny models "
                                   "built in-process; the run exercises every code path, but its numbers say "
                                   "nothing about real models.")
        outcome.result = result
        outcome.failures = self.store.failures(self.image_keys)
        self.completeness(outcome)
        return outcome


def _to_tensor(image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _where(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame, so a plugin author sees where their factory failed."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "" if tb is None else f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"


def _one_line_tb() -> str:
    exc = sys.exc_info()[1]
    return _one_line(exc) if exc is not None else traceback.format_exc(limit=1)[:500]
