"""Wall time per run stage, and how long the accelerator sat idle in each.

The runner wraps each stage in :meth:`StageClock.stage` and each piece of
device work (a pipeline call, a metric forward) in :meth:`StageClock.busy`.
On CUDA, busy time is the span between CUDA events recorded around each device
call (the device's own clock, not what the Python thread waited for), so
``idle = wall - busy`` is the time *outside device calls* in that stage:
decoding, PNG encoding, SQLite, Python. Gaps the GPU has *inside* a pipeline
call (kernel-launch bound stretches) count as busy; a profiler shows those.
On the CPU the busy time is the wall time of the bracketed calls, and idle is
the toolkit's own work around them. Each stage also counts the CPU seconds the
whole process used while it ran (every thread: the PNG writer and decoders
too), so a stage that waits (wall without CPU) tells itself apart from one that
computes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class StageTime:
    wall: float = 0.0
    busy: float = 0.0
    calls: int = 0
    cpu: float = 0.0  # process CPU seconds (user + system, all threads) while the stage ran

    @property
    def idle(self) -> float:
        return max(0.0, self.wall - self.busy)


@dataclass
class StageClock:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    stages: dict[str, StageTime] = field(default_factory=dict)
    _events: list[tuple[str, object, object]] = field(default_factory=list)

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    def _settle(self) -> None:
        """Turn recorded CUDA event pairs into busy seconds (one synchronisation per stage)."""
        if not self._events:
            return
        torch.cuda.synchronize(self.device)
        for name, start, end in self._events:
            self.stages.setdefault(name, StageTime()).busy += start.elapsed_time(end) / 1000.0  # type: ignore[attr-defined]
        self._events.clear()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize(self.device)
            record = self.stages.setdefault(name, StageTime())
            record.wall += time.perf_counter() - started
            record.cpu += time.process_time() - cpu_started
            if self._cuda:
                self._settle()

    @contextmanager
    def busy(self, stage: str) -> Iterator[None]:
        record = self.stages.setdefault(stage, StageTime())
        record.calls += 1
        if self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((stage, start, end))
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            record.busy += time.perf_counter() - started

    def table(self) -> list[dict[str, float | str | int]]:
        return [{"stage": name, "wall_s": round(t.wall, 4), "device_busy_s": round(t.busy, 4),
                 "device_idle_s": round(t.idle, 4), "calls": t.calls, "cpu_s": round(t.cpu, 4)}
                for name, t in self.stages.items()]
