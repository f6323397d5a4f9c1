"""Scoring uint8 image tensors into the Store: shared by score-while-generating and the cache-read path.

Both paths hand :class:`TensorScorer` uint8 batches (from the pipeline's output
tensor, quantised as the PNG is, or from decoded PNGs) and it converts them to
float on the device with :func:`~iqabench.execution.image_tensors.to_unit_float`, so a
score does not depend on whether its image was made in this run or read from
the cache. Each metric model is built once, on first use. A batch that fails
is split to find the image that breaks the metric; the others are still scored,
and every failure becomes a score row with its error (retried on the next run).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..execution.image_tensors import ParallelDecoder, to_unit_float
from ..execution.oom import free_accelerator_memory, is_out_of_memory
from ..execution.runtime import Runtime
from ..execution.stage_timing import StageClock
from ..metrics import Metric, MetricContractError, build_metric
from ..store.store import Store

ScoreRow = tuple[str, str, str, float | None, str | None]


class TensorScorer:
    """Scores batches for the metrics each image still needs, writing rows to ``store``."""

    def __init__(self, store: Store, runtime: Runtime, metric_fps: Mapping[str, str],
                 clock: StageClock | None = None, *, metrics: dict[str, Metric] | None = None,
                 build: Callable[[str], Metric] | None = None):
        self.store = store
        self.runtime = runtime
        self.metric_fps = dict(metric_fps)
        self.metrics: dict[str, Metric] = {} if metrics is None else metrics  # shared with the runner
        #: image key -> the prompt it was generated from, for prompt-aware metrics (the runner fills it)
        self.prompts: dict[str, str] = {}
        self._build = build or (lambda name: build_metric(name, self.runtime))
        self.clock = clock or StageClock(runtime.torch_device)

    def metric(self, name: str) -> Metric:
        if name not in self.metrics:
            with self.clock.stage("metric-build"):
                self.metrics[name] = self._build(name)
        return self.metrics[name]

    def score(self, keys: Sequence[str], images: torch.Tensor, needed: Mapping[str, Sequence[str]],
              stage: str = "score", write: bool = True) -> list[ScoreRow]:
        """``images[i]`` (uint8 [3, H, W], any device) is ``keys[i]``; ``needed[key]`` lists its metrics.

        Returns the rows; ``write=False`` leaves storing them to the caller (the runner stores in-memory scores
        only after the image's PNG is in place, so a score never exists for an image the cache lacks).
        """
        names = sorted({m for key in keys for m in needed.get(key, ())})
        rows: list[ScoreRow] = []
        if not names:
            return rows
        images = images.to(self.runtime.torch_device, non_blocking=True)
        with self.clock.busy(stage):
            floats = to_unit_float(images)
        for name in names:
            index = [i for i, key in enumerate(keys) if name in needed.get(key, ())]
            members = [keys[i] for i in index]
            batch = floats if len(index) == len(keys) else floats[index]
            metric_rows = self._rows(self.metric(name), members, batch, stage)
            if write:
                self.store.put_scores(metric_rows)
            rows.extend(metric_rows)
        return rows

    def _rows(self, metric: Metric, keys: list[str], batch: torch.Tensor, stage: str) -> list[ScoreRow]:
        fp = self.metric_fps[metric.name]
        cap = self.runtime.batch.for_scoring()
        if len(keys) > cap:  # an earlier out-of-memory backed the policy off: score in chunks of that size
            return [row for i in range(0, len(keys), cap)
                    for row in self._rows(metric, keys[i : i + cap], batch[i : i + cap], stage)]
        try:
            with self.clock.busy(stage):
                prompts = [self.prompts[k] for k in keys] if metric.info.prompt_aware else None
                values = metric.score(batch, prompts=prompts).tolist()
            return [(k, metric.name, fp, _finite_or_none(v), None if np.isfinite(v) else "non-finite score")
                    for k, v in zip(keys, values, strict=True)]
        except MetricContractError:
            raise  # the metric itself is wrong, not one image: stop before any of its scores is stored
        except Exception as exc:
            if len(keys) == 1:
                if is_out_of_memory(exc):
                    free_accelerator_memory()
                return [(keys[0], metric.name, fp, None, _one_line_tb())]
            if is_out_of_memory(exc):  # the batch policy's back-off: retry in halves, and later batches start there
                free_accelerator_memory()
                self.runtime.batch.pass_back_off(len(keys))
                return self._rows(metric, keys, batch, stage)
        rows: list[ScoreRow] = []
        for i, key in enumerate(keys):  # find which image breaks the metric; score the others
            rows.extend(self._rows(metric, [key], batch[i : i + 1], stage))
        return rows

    def score_cached(self, keys: Sequence[str], needed: Mapping[str, Sequence[str]], batch_size: int,
                     advance: Callable[[int], None] = lambda _: None, workers: int | None = None,
                     unreadable: Callable[[str, BaseException], None] | None = None) -> None:
        """Decode cached PNGs on a thread pool (prefetching) and score them batch by batch.

        An image that does not decode goes to ``unreadable(key, error)`` (the runner moves it aside and
        regenerates it); without a handler, its metrics get an error row.
        """
        batches = [list(keys[i : i + batch_size]) for i in range(0, len(keys), batch_size)]
        decoder = ParallelDecoder(self.store.load_image, self.runtime.torch_device, workers=workers)
        for batch_keys, decoded in zip(batches, decoder.batches(batches), strict=True):
            for key, exc in decoded.failed.items():
                if unreadable is not None and isinstance(exc, (OSError, SyntaxError, ValueError)):
                    unreadable(key, exc)
                    continue
                self.store.put_scores([(key, m, self.metric_fps[m], None, f"unreadable image: {one_line(exc)}")
                                       for m in needed[key]])
            for group in decoded.batches:
                self.score(group.keys, group.images, needed)
            advance(len(batch_keys))


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def _one_line_tb() -> str:
    exc = sys.exc_info()[1]
    return one_line(exc) if exc is not None else traceback.format_exc(limit=1)[:500]
