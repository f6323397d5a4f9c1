"""What a benchmark's analysis produces and the report reads: :class:`Result` and its thumbnails.

These types sit below both ``benchmarks`` (which make them) and ``reports``
(which persist and render them), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure


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
