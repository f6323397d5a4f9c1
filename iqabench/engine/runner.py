"""The run pipeline: plan -> generate -> score -> analyze -> report, each stage resumable from the Store.

This is the Python API behind ``iqabench run`` (the CLI only parses and
prints). Every stage reads only what the stage before it wrote to the Store:
images are keyed by content, scores by (image, metric, metric fingerprint), so
re-running an interrupted run skips what is done, and two benchmarks over the
same generator, prompts and seeds generate each image once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..benchmark import AnalysisContext, PlannedItem, Result
from ..contracts.errors import UserError
from ..contracts.execution import Execution
from ..contracts.generators import Generator, GeneratorPool
from ..contracts.registry import load_plugin
from ..contracts.specs import RunSpec
from ..execution.distributed import distributed_shard, owned_keys, wait_for_everyone
from ..execution.image_checks import generated_image_problem
from ..execution.image_tensors import generate_uint8, stack_by_size, to_pil
from ..execution.oom import free_accelerator_memory, is_out_of_memory
from ..execution.runtime import Runtime
from ..execution.stage_timing import StageClock
from ..metrics import Metric, MetricUnavailableError, build_metric, check_available
from ..store.score_shards import ShardedStore, merge_shards, prepare_for_readers
from ..store.store import CorruptImageError, Store
from .batch_autotune import BatchSizeProbe
from .batch_autotune import recall as recall_batch_size
from .batch_autotune import remember as remember_batch_size
from .manifest import check_run_id_name, default_run_id, run_manifest
from .planning import key_work, plan_work, planned_records
from .preflight import DEFAULT_FETCH_HINT, ensure_present
from .run_binding import RunClaim, RunJson, check_run_id, claim_run
from .run_status import Heartbeat, owner
from .scoring import TensorScorer

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
    #: digest of everything the analysis reads (see :meth:`Runner.analysis_inputs`), recorded in run.json
    analysis_inputs: str | None = None
    #: the analysis inputs equal those of the finished run already in the folder: its result and report stand
    unchanged: bool = False

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


def to_host(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Images on the CPU with one device->host copy (one sync) when they share a shape, else one per image."""
    if images and images[0].device.type != "cpu" and all(i.shape == images[0].shape for i in images):
        return list(torch.stack(images).cpu().unbind(0))
    return [image.to("cpu") for image in images]


class Runner:
    """Executes one RunSpec against one Store."""

    def __init__(self, spec: RunSpec, store: Store | str | os.PathLike[str], *, run_id: str | None = None,
                 execution: Execution | None = None, progress: ProgressFactory = _silent,
                 log: Callable[[str], None] = lambda _: None, shard: tuple[int, int] | None = None,
                 score_in_memory: bool = True, decode_workers: int | None = None, overwrite: bool = False,
                 trust_hub_code: bool = False, preflight: bool = True, fetch_hint: str = DEFAULT_FETCH_HINT,
                 download: bool = True):
        self.spec = spec
        #: ``--overwrite``: a run id whose run.json holds another spec may be replaced (see :mod:`.run_binding`).
        self.overwrite = overwrite
        self._claim: RunClaim | None = None
        #: ``--trust-hub-code``: metrics may import code from torch hub's cache (see :mod:`iqabench.io.hub_code`).
        self.trust_hub_code = trust_hub_code
        for plugin in spec.plugins:
            load_plugin(plugin)
        #: How the run executes (device, batch size, fast paths); ``None``: what the spec was written with.
        self.execution = execution if execution is not None else spec.execution_hint()
        self._distributed = None
        if shard is None:
            self._distributed, shard = distributed_shard()
        self.shard = shard
        device = self.execution.device
        if self._distributed is not None and device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{self._distributed.local_process_index}"  # one GPU per process
        self.runtime = Runtime.from_execution(self.execution, spec.dtype, device=device)
        self.run_id = default_run_id(spec, self.execution) if run_id is None else check_run_id_name(run_id)
        self.log = log  # before the store: opening a sharded one may warn
        self.store = self._open_store(store)
        #: Score images made in this run from their tensors, in the generation pass (False: decode the PNGs).
        self.score_in_memory = score_in_memory
        self.decode_workers = decode_workers
        self.clock = StageClock(self.runtime.torch_device)
        self._scored_in_memory: set[tuple[str, str]] = set()
        self._generators_ok: set[str] = set()  # generators with at least one image made in this run
        self._last_generate_s = 0.0
        # a bad --run-id fails now (also under --dry-run), not after planning; run.json is read once per version
        self._run_json = RunJson(self.store.run_dir(self.run_id) / "run.json")
        if self.is_main_process:  # a run id of another spec fails now too; claim_run re-checks under its lock
            check_run_id(self.store.run_dir(self.run_id), spec.to_dict(), overwrite=overwrite,
                         run_json=self._run_json)
        self.progress = progress if self.is_main_process else _silent
        # Every generator spec is built once (validates specs, declares weights, loads nothing heavy), and shared
        # with the benchmark's plan and analysis.
        self.pool = GeneratorPool(self.runtime)
        work = plan_work(spec, self.pool)
        # Preflight (iqabench.engine.preflight): every missing file at once, or downloaded first when online.
        if preflight and ensure_present(work.needs, log=self.log, fetch_hint=fetch_hint,
                                        download=download and self._distributed is None):
            self.pool = GeneratorPool(self.runtime)
            work = plan_work(spec, self.pool)  # the downloaded files are there now
        self.needs = work.needs
        self.benchmark = work.benchmark
        self.plan: list[PlannedItem] = work.plan
        self.generators: dict[str, Generator] = work.generators
        self.metric_plan = work.metric_plan
        if preflight is False and work.missing:
            return  # a planning-only runner (tests inspect its needs): it has its plan and needs, nothing to key
        self.run_plan = key_work(spec, self.runtime, work)
        self.image_keys = self.run_plan.image_keys
        self.metric_fps = self.run_plan.metric_fps
        for name in self.metric_plan:
            check_available(name, trust_hub_code=trust_hub_code)  # fails now, not after hours of generation
        self._metrics: dict[str, Metric] = {}
        self._quarantined_while_scoring: list[str] = []
        self.scorer = TensorScorer(self.store, self.runtime, self.metric_fps, self.clock, metrics=self._metrics,
                                   build=self._build_metric)
        self.scorer.prompts = {k: p.item.prompt for p, k in zip(self.plan, self.image_keys, strict=True)}

    @property
    def auto_batch_size(self) -> bool:
        """``--batch-size auto``: probe batch sizes on the run's own work (see :mod:`.batch_autotune`)."""
        return self.runtime.batch.auto

    def _open_store(self, store: Store | str | os.PathLike[str]) -> Store:
        """The Store; with several processes, one whose SQLite writes go to this process's own shard.

        Process 0 creates the shared database (and merges shards a killed earlier attempt of this run left)
        before the others open it, so nobody writes it concurrently (see :mod:`iqabench.store.score_shards`).
        """
        index, count = self.shard
        if count <= 1:
            return store if isinstance(store, Store) else Store(store)
        root = store.root if isinstance(store, Store) else store
        if index == 0:
            shared = store if isinstance(store, Store) else Store(root)
            shared.run_dir(self.run_id)  # a bad --run-id fails here, before any shard path is built from it
            merge_shards(shared, self.run_id)
            if prepare_for_readers(shared) != "delete":  # no WAL while processes on several hosts read it
                self.log("warning: the store's database stays in WAL mode because something else has it open; "
                         "on a file system shared by several hosts, close other users of the store first")
            shared.close()
        elif isinstance(store, Store):
            store.close()  # process 0 can leave WAL only when no other connection is open
        wait_for_everyone(self._distributed)
        return ShardedStore(root, self.run_id, index)

    # -- plan ------------------------------------------------------------------------------
    def _unique(self) -> dict[str, PlannedItem]:
        unique: dict[str, PlannedItem] = {}
        for key, planned in zip(self.image_keys, self.plan, strict=True):
            unique.setdefault(key, planned)
        return unique

    def _mine(self, keys: Sequence[str]) -> list[str]:
        """This process's share of a key list (see :func:`iqabench.execution.distributed.owned_keys`)."""
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
        why = self.store.check_image(key, decode="verify")  # PNG structure + CRCs: same-size garbage too
        if why is None:
            return True
        self._set_aside(key, why, planned)
        return False

    def _set_aside(self, key: str, why: str, planned: PlannedItem | None = None) -> None:
        planned = planned or self._unique()[key]
        moved = self.store.quarantine_image(key, why)
        self.log(f"cached image of {planned.item.prompt_id} seed {planned.item.seed} ({planned.generator}) {why}; "
                 f"moved to {moved or 'cache/quarantine/'} and regenerating it")

    def _needed_scores(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """Metrics each of ``keys`` still needs (absent or a cached error), by image key."""
        needed: dict[str, list[str]] = defaultdict(list)
        mine = set(keys)
        for metric, targets in self._score_targets().items():
            wanted = [k for k in targets if k in mine]
            if not wanted:
                continue
            present = self.store.get_scores(wanted, metric, self.metric_fps[metric])
            for key in wanted:
                # A cached error (None) is retried, as generation failures are: it may have been transient
                # (out of memory, a driver hiccup) and would otherwise stick in the shared cache for good.
                if present.get(key) is None and (key, metric) not in self._scored_in_memory:
                    needed[key].append(metric)
        return needed

    def generate(self) -> None:
        unique = self._unique()
        todo = [k for k in self._mine(list(unique)) if not self._reusable(k, unique[k])]
        if not todo:
            return
        by_generator: dict[str, list[str]] = defaultdict(list)
        for key in todo:
            by_generator[unique[key].generator].append(key)
        # Score while generating: the metrics these images need, computed from the pipeline's tensors.
        needed = self._needed_scores(todo) if self.score_in_memory else {}
        task = self.progress("generating", len(todo))
        # PNG encoding and the atomic write run on a background thread, off the generation loop.
        with self.clock.stage("generate"), \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="iqabench-writer") as writer:
            pending: list[Future] = []
            try:
                for gen_name, keys in by_generator.items():
                    generator = self.generators[gen_name]
                    probe = self._batch_size_probe(generator)
                    start = 0
                    while start < len(keys):
                        size = probe.next_size() if probe is not None else self.runtime.batch_size
                        self.runtime.batch.set(size)
                        batch = keys[start : start + size]
                        done = self._generate_batch(generator, batch, unique, writer, pending, needed)
                        if probe is not None:
                            self._probe_step(probe, generator, size, len(batch), done)
                        start += done
                        task.advance(done)
                    self._drain(pending, block=False)
                with self.clock.stage("png-write-wait"):
                    self._drain(pending, block=True)
            finally:
                task.close()

    def _speed_setup(self) -> dict[str, Any]:
        """What changes speed and memory but not pixels: a batch size probed with --compile is not one for
        a run without it."""
        from ..execution.fast_paths import FastPaths

        return {**FastPaths.from_runtime(self.runtime).describe(),
                "attention_slicing": bool(getattr(self.runtime, "attention_slicing", False))}

    def _batch_size_probe(self, generator: Generator) -> BatchSizeProbe | None:
        """A probe for ``--batch-size auto`` (None when the size is fixed or was remembered from a probe)."""
        if not self.auto_batch_size:
            return None
        remembered = recall_batch_size(self.store, generator.fingerprint(), self.runtime.torch_device,
                                       self._speed_setup())
        if remembered is not None:
            self.runtime.batch.set(remembered)
            self.log(f"--batch-size auto: using {remembered} for {generator.name}, measured by an earlier run")
            return None
        return BatchSizeProbe()

    def _probe_step(self, probe: BatchSizeProbe, generator: Generator, size: int, n: int, done: int) -> None:
        if probe.finished:
            return
        if done == 0:  # out of memory at ``size``: the back-off already shrank the batch
            probe.record_out_of_memory(size)
        elif n == size:  # a full call: its time per image counts (a short last call would not)
            probe.record(size, n, self._last_generate_s)
        if probe.finished:
            self.runtime.batch.set(probe.chosen)
            rates = ", ".join(f"{k}: {v:.3g}" for k, v in sorted(probe.throughput.items()))
            self.log(f"--batch-size auto chose {probe.chosen} for {generator.name} (images/s by size: {rates}"
                     + (f"; {probe.out_of_memory_at} ran out of memory)" if probe.out_of_memory_at else ")"))
            remember_batch_size(self.store, generator.fingerprint(), self.runtime.torch_device, probe,
                                self._speed_setup())

    def _generate_batch(self, generator: Generator, keys: list[str], unique: dict[str, PlannedItem],
                        writer: ThreadPoolExecutor, pending: list[Future],
                        needed: Mapping[str, Sequence[str]]) -> int:
        """Generate ``keys``, score them in memory, queue their PNGs; returns how many were handled (fewer after
        an out-of-memory back-off)."""
        items = [unique[k].item for k in keys]
        try:
            started = time.perf_counter()
            with self.clock.busy("generate"):
                images = generate_uint8(generator, items)
            if self.runtime.torch_device.type == "cuda":
                torch.cuda.synchronize(self.runtime.torch_device)
            self._last_generate_s = time.perf_counter() - started
        except Exception as exc:
            if is_out_of_memory(exc) and self.runtime.batch_size > 1:
                self.runtime.batch.back_off()
                self.log(f"out of memory with {len(keys)} images per batch; retrying with "
                         f"{self.runtime.batch_size} (pass --batch-size {self.runtime.batch_size} next time: "
                         "the batch size is not part of the run id, so the run resumes in the same folder)")
                free_accelerator_memory()
                return 0
            if len(keys) == 1:
                self.store.record_failure(keys[0], "generate", _one_line(exc))
                self.log(f"generation failed for {items[0].prompt_id} seed {items[0].seed}: {_one_line(exc)}")
                if generator.name not in self._generators_ok and isinstance(exc, UserError):
                    raise exc  # the user's mistake (an argument the pipeline does not take): one sentence
                if generator.name not in self._generators_ok and is_permanent_error(exc):
                    raise GeneratorBrokenError(
                        f"generator {generator.name!r} failed on its first image with {_one_line(exc)}; an error "
                        "of this kind fails every image the same way, so the rest were not attempted") from exc
                return 1
            handled = 0
            while handled < len(keys):  # isolate the failing item(s); the rest of the batch still lands
                # 0 means an out-of-memory back-off shrank the batch: retry the same item, do not skip it.
                handled += self._generate_batch(generator, [keys[handled]], unique, writer, pending, needed)
            return len(keys)
        self._generators_ok.add(generator.name)
        if len(images) != len(items):
            raise RuntimeError(f"generator {generator.name!r} returned {len(images)} images for {len(items)} items")
        rows: dict[str, list] = defaultdict(list)
        if needed:
            with self.clock.stage("score-in-memory"):
                for group_keys, batch in stack_by_size(keys, images):
                    for row in self.scorer.score(group_keys, batch, needed, stage="score-in-memory", write=False):
                        rows[row[0]].append(row)
        on_cpu = to_host(images)  # PIL and PNG on the writer thread
        check = getattr(generator, "check_outputs", True)  # False for generators that return real photos
        batch = [(key, item, image, rows.get(key, [])) for key, item, image in zip(keys, items, on_cpu, strict=True)]
        pending.append(writer.submit(self._write_batch, batch, check))
        for key in keys:
            self._scored_in_memory.update((key, row[1]) for row in rows.get(key, []))
        self._drain(pending, block=False)
        return len(keys)

    def _write_batch(self, batch: list[tuple[str, Any, torch.Tensor, list]], check: bool) -> None:
        """Writer thread: check each image, write the batch's PNGs (bit-identical to diffusers' PIL output), then
        their records and scores in one transaction (:meth:`Store.put_images`).

        An unusable image (constant, empty) is recorded as a failure, never cached, and its scores are dropped.
        """
        good = []
        for key, item, image, rows in batch:
            pil = to_pil(image)
            problem = generated_image_problem(pil) if check else None
            if problem is not None:
                self.store.record_failure(key, "generate", problem)
                self.log(f"generation failed for {item.prompt_id} seed {item.seed}: {problem}")
                continue
            good.append((key, pil, rows))
        if good:
            self.store.put_images(good)

    @staticmethod
    def _drain(pending: list[Future], *, block: bool) -> None:
        """Surface write errors; keep at most a few batches in flight."""
        while pending and (block or pending[0].done() or len(pending) > 2):
            pending.pop(0).result()

    def score(self) -> None:
        """Score what the generation pass did not: cached images (decoded in parallel) and retried errors."""
        with self.clock.stage("score"):
            targets = self._score_targets()
            needed = self._needed_scores([k for k in self._mine(sorted({k for ks in targets.values() for k in ks}))
                                          if self.store.has_image(k)])
            if not needed:
                return
            task = self.progress("scoring", len(needed))
            try:
                self.scorer.score_cached(sorted(needed), needed, self.runtime.batch.for_scoring(),
                                         advance=task.advance, workers=self.decode_workers,
                                         unreadable=self._unreadable)
            finally:
                task.close()

    def _unreadable(self, key: str, exc: BaseException) -> None:
        """A cached image that does not decode: moved aside, regenerated by the next round of execute()."""
        why = exc.reason if isinstance(exc, CorruptImageError) else f"does not decode ({_one_line(exc)})"
        self._set_aside(key, why)
        self._quarantined_while_scoring.append(key)

    def _build_metric(self, name: str) -> Metric:
        try:
            return build_metric(name, self.runtime, trust_hub_code=self.trust_hub_code)
        except (MetricUnavailableError, UserError):
            raise  # already one sentence
        except (ImportError, OSError, RuntimeError) as exc:
            # a missing package or file, a model file torch cannot open: the environment's, one sentence. Anything
            # else a factory raises (a KeyError, a TypeError) is a bug, ours or a plugin's: it keeps its traceback
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
                              self.pool, self.runtime)
        result = self.benchmark.analyze(ctx)
        if isinstance(result, Result):
            self._flag_comparisons(result, ctx)
        return result

    def _flag_comparisons(self, result: Result, ctx: AnalysisContext) -> None:
        """Issue 25: a comparison whose two sides made the same pixels is flagged, whatever the benchmark, and
        a baseline that is not plainly "CFG off" (FLUX-dev's embedded guidance 1.0) says what it is."""
        same = [c for c in ctx.identical_to_baseline().values() if c.all_identical]
        for check in same:
            result.notes.insert(0, check.sentence())
        if same:
            result.summary["identical_to_baseline"] = {c.generator: c.baseline for c in same}
        if not self.spec.baseline:  # what "the same model without guidance" means where it is not CFG off
            notes = [note for name in self.pool.canonical_list(self.spec.generators)
                     if (note := getattr(self.pool.get(name), "baseline_note", None))]
            result.notes.extend(notes)
            if notes:  # the terminal summary prints them too (iqabench.cli.summary)
                result.summary["baseline_notes"] = notes

    # -- whole run -------------------------------------------------------------------------
    def manifest(self, status: str, plan: PlanSummary | None = None, **extra: Any) -> dict[str, Any]:
        """The run.json document for this run at ``status`` (see :mod:`.manifest`)."""
        generators = {name: {"fingerprint": gen.fingerprint(), "baseline": gen.baseline()}
                      for name, gen in self.generators.items()}
        return run_manifest(self.run_id, self.spec, status, self.runtime, generators, self.metric_fps,
                            None if plan is None else plan.__dict__, execution=self.execution.to_dict(),
                            planned=planned_records(self.run_plan), **extra)

    def execute(self, *, dry_run: bool = False, hold_run_id: bool = False) -> RunOutcome:
        """Plan, generate, score and analyse; stops at the :class:`Result` (persisting and rendering it is
        :func:`iqabench.api.execute`'s job, so the runner never imports the report stage).

        The main process holds the run id (:func:`.run_binding.claim_run`) while it works; ``hold_run_id``
        keeps it held after returning, until :meth:`release_run_id` (the API's final writes)."""
        plan = self.summarize_plan()
        outcome = RunOutcome(self.run_id, self.store.run_dir(self.run_id), plan)
        if dry_run:
            return outcome
        if self.is_main_process and self._claim is None:
            self._claim = claim_run(self.store.run_dir(self.run_id), self.spec.to_dict(), overwrite=self.overwrite,
                                    run_json=self._run_json)
        try:
            return self._execute(plan, outcome)
        finally:
            if not hold_run_id:
                self.release_run_id()

    def release_run_id(self) -> None:
        """Let another process use this run id (the lock also goes when this process exits)."""
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def _execute(self, plan: PlanSummary, outcome: RunOutcome) -> RunOutcome:
        self.store.sweep_temp_files()
        if self.is_main_process:
            self._previous = self._read_previous_manifest()
            self.store.write_run_json(self.run_id, self.manifest("running", plan, owner=owner()))
        with Heartbeat(self.store.run_dir(self.run_id)) if self.is_main_process else contextlib.nullcontext():
            return self._stages(outcome)

    def _read_previous_manifest(self) -> dict[str, Any]:
        """The run.json a finished earlier run left here (empty when there is none or it cannot be read)."""
        from ..store.run_folders import checked_run_manifest

        try:
            document = self._run_json.read()  # the document the checks under the lock read, unless it changed
            return {} if document is None else checked_run_manifest(document, self._run_json.path)
        except (OSError, ValueError):
            return {}

    def analysis_inputs(self) -> str:
        """sha256 of everything the analysis reads: the spec, iqabench's version and the analysis libraries'
        versions, every planned image key with its recorded PNG digest, every planned score (value or error) and
        the failures. Equal inputs give an equal result, so a resume of a finished run need not analyse, save or
        render again (issue 29)."""
        import hashlib
        import json

        from .. import __version__

        keys = sorted(set(self.image_keys))
        scores = {}
        for metric, indices in sorted(self.metric_plan.items()):
            wanted = sorted({self.image_keys[i] for i in indices})
            got = self.store.get_scores(wanted, metric, self.metric_fps[metric])
            scores[metric] = [[k, got.get(k, "absent")] for k in wanted]
        document = {"spec": self.spec.to_dict(), "version": __version__, "libraries": _analysis_library_versions(),
                    "code": _analysis_code_digest(self.benchmark, self.spec.options),
                    "metrics": self.metric_fps,
                    "images": [[k, self.store.image_digest(k)] for k in keys], "scores": scores,
                    "failures": sorted(self.store.failures(keys).items())}
        return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()

    def _finished_with(self, inputs: str) -> bool:
        """The folder holds a complete run whose analysis read exactly ``inputs``, with its result and report."""
        previous = getattr(self, "_previous", {})
        folder = self.store.run_dir(self.run_id)
        return (previous.get("status") == "complete" and previous.get("analysis_inputs") == inputs
                and (folder / "report.html").is_file() and (folder / "results" / "result.json").is_file())

    def _stages(self, outcome: RunOutcome) -> RunOutcome:
        self.build_metrics()
        self.generate()
        self._wait_for_everyone()  # every image exists before anyone scores
        self.score()
        if isinstance(self.store, ShardedStore):
            self.store.close()  # every row is committed to this process's shard before process 0 merges it
        self._wait_for_everyone()
        if self._quarantined_while_scoring and self._distributed is None:
            # Images that decoded badly while scoring were moved aside: make and score them once more now.
            self._quarantined_while_scoring.clear()
            self.generate()
            self.score()
        if not self.is_main_process:
            return outcome  # workers stop here; the main process analyses once all shards are in
        if isinstance(self.store, ShardedStore):
            with self.clock.stage("merge-shards"):
                merge_shards(self.store, self.run_id)  # alone now: the others are past their last write
                self.store.finish_sharding()
        outcome.analysis_inputs = self.analysis_inputs()
        if self._finished_with(outcome.analysis_inputs):
            outcome.unchanged = True  # the saved result and report are this analysis's: nothing is rewritten
            outcome.failures = self.store.failures(self.image_keys)
            self.completeness(outcome)
            return outcome
        return self.analyse_into(outcome)

    def analyse_into(self, outcome: RunOutcome) -> RunOutcome:
        """Analyse (main process, every image and score in): the Result, the failures and completeness."""
        outcome.unchanged = False
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


#: The core modules whose code shapes a benchmark's analysis: their source enters the analysis cache's digest.
ANALYSIS_CODE_MODULES = (
    "iqabench.benchmark", "iqabench.analysis.stats", "iqabench.analysis.decisions",
    "iqabench.analysis.compare", "iqabench.contracts.results", "iqabench.analysis.plotting",
    "iqabench.analysis.number_format", "iqabench.analysis.labels", "iqabench.analysis.identical")


#: The libraries whose code shapes a result or its report (statistics, tables, figures, the page): an upgrade of
#: any of them must make a resume analyse and render again, as a change of iqabench's own code does.
ANALYSIS_LIBRARIES = ("numpy", "scipy", "pandas", "statsmodels", "matplotlib", "seaborn", "jinja2")


def _analysis_library_versions() -> dict[str, str | None]:
    """Installed versions of :data:`ANALYSIS_LIBRARIES`, read from their metadata (nothing is imported)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in ANALYSIS_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _analysis_code_digest(benchmark: Any, options: dict[str, Any]) -> str:
    """sha256 of what turns scores into the result and the report besides the scores themselves: the benchmark's
    code (its file, and for a built-in the whole benchmarks package: they share helpers), the core's analysis
    modules, the report package (modules and templates), and every file an option names (by size and mtime: a
    reference-statistics file rebuilt in place). A development checkout changes code without a version bump, and a
    resume must not keep a result or report the current code or inputs would not make."""
    import hashlib
    import importlib.util
    import inspect

    def package_dir(name: str) -> Path | None:
        spec = importlib.util.find_spec(name)  # the runner never imports the report stage itself
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        return Path(locations[0]) if locations else None

    def module_file(name: str) -> str:
        spec = importlib.util.find_spec(name)  # by module name, so a module can move without leaving the digest
        if spec is None or not spec.origin or not Path(spec.origin).is_file():
            # a renamed module silently left out would let a changed analysis reuse stale results: a bug, loudly
            raise RuntimeError(f"ANALYSIS_CODE_MODULES names {name!r}, which is not a module file")
        return spec.origin

    own = inspect.getsourcefile(type(benchmark))
    files = [own] + [module_file(m) for m in ANALYSIS_CODE_MODULES]
    for package in ("iqabench.benchmarks", "iqabench.reports"):
        folder = package_dir(package)
        if folder is not None and (package == "iqabench.reports" or (own and folder in Path(own).parents)):
            files += sorted(str(p) for p in folder.rglob("*") if p.suffix in (".py", ".j2", ".html", ".css", ".js"))
    digest = hashlib.sha256()
    for name in dict.fromkeys(files):
        if name and Path(name).is_file():
            digest.update(name.encode())
            digest.update(Path(name).read_bytes())
    for key, value in sorted(options.items()):
        if isinstance(value, str) and len(value) < 4096 and Path(value).expanduser().is_file():
            info = Path(value).expanduser().stat()
            digest.update(f"{key}={value}:{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()


class GeneratorBrokenError(RuntimeError):
    """A generator's first image failed with an error that would fail every image (issue 25): the run stops."""


def is_permanent_error(exc: BaseException) -> bool:
    """An error that does not depend on the image or the moment (a wrong argument, a missing attribute, an
    unsupported scheduler): out-of-memory, unusable outputs (NaN, constant) and I/O count as transient."""
    from ..execution.image_checks import GeneratedImageError

    if is_out_of_memory(exc) or isinstance(exc, (GeneratedImageError, OSError)):
        return False
    return isinstance(exc, (TypeError, AttributeError, ValueError, LookupError, NotImplementedError, ImportError))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _where(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame, so a plugin author sees where their factory failed."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "" if tb is None else f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"


