"""The benchmark plugin protocol and the Result it hands to the report.

A benchmark states its plan (which images, from which generators) and its
analysis (tables, figures, grids from what the Store holds). Generation,
caching, scoring, resume and rendering are the core's job, as pytorch-grad-cam
keeps hooking and resizing in its base class so a CAM method is one method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .registry import BENCHMARKS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from .generators import WorkItem
    from .specs import RunSpec
    from .store import Store


@dataclass(frozen=True)
class PlannedItem:
    """A work item bound to the generator spec that makes it."""

    generator: str
    item: WorkItem


@dataclass
class ImageRef:
    """One thumbnail in a report grid: a cached image plus a caption and the scores shown under it."""

    image_key: str
    caption: str
    scores: dict[str, float] = field(default_factory=dict)
    group: str = ""  # column label in a grid, e.g. the generator spec


@dataclass
class Result:
    """What a benchmark's analysis produced; the report renders every field."""

    benchmark: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    grids: dict[str, list[ImageRef]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # caveats shown verbatim in the report


class Benchmark(Protocol):
    name: str
    description: str

    def plan(self, spec: RunSpec) -> list[PlannedItem]: ...

    def analyze(self, store: Store, spec: RunSpec, plan: list[PlannedItem]) -> Result: ...


def register_benchmark(name: str, *, description: str = "", overwrite: bool = False):
    """Decorator registering a benchmark class (instantiated with no arguments)."""
    return BENCHMARKS.register(name, description=description, overwrite=overwrite)


def build_benchmark(name: str) -> Benchmark:
    entry = BENCHMARKS.get(name)
    bench = entry.factory()
    bench.name = name
    return bench
