"""What a benchmark's analysis produces and the report reads: the typed result contract.

These types sit below both ``benchmarks`` (which make them) and ``reports``
(which persist and render them), so neither imports the other. A report reads
fields, never guesses from table or column names (lm-eval's result schema
carries ``higher_is_better`` per metric the same way):

* :class:`Table` -- a DataFrame with its footnote, inference unit and, for each
  *effect* column (a gain or difference whose 0 means "no effect"), the column
  holding its Holm-adjusted p-value: every "n.s." mark follows that column.
* :class:`Headline` -- the grid that heads a run (rows x columns of estimates,
  CIs, adjusted p-values, units), with its direction per column; which cells are
  significant and which one is bold is decided here, once.
* :class:`PerItemScores` -- one score per (generator, condition, prompt, seed,
  metric) with fixed columns, what a cross-run comparison pairs.

``SCHEMA_VERSION`` is written into ``result.json``; the decision rule is in docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

#: result.json's schema: 2 added typed tables, headlines and per-item scores (1: pandas ``attrs``).
SCHEMA_VERSION = 2
#: The one decision rule (docs/statistics.md): a cell is significant when its Holm-adjusted p-value, adjusted over
#: the cells of its table, is below ALPHA. (Here, in the contract, so the analyses that make tables import it from
#: below; :mod:`iqabench.analysis.stats` re-exports it.)
ALPHA = 0.05
#: Below this many independent units (prompts, or images with one seed per prompt) no 95% CI is shown: the
#: interval is still computed and stored, but the report reads "too few prompts for a 95% CI". Same everywhere.
MIN_UNITS = 10


def too_few_units(n_units: float | int | None) -> bool:
    """Whether an estimate rests on fewer than MIN_UNITS independent units (its CI is not shown)."""
    try:
        count = float(n_units)  # None, pd.NA or text: no count, so no CI
    except (TypeError, ValueError):
        return True
    return not math.isfinite(count) or count < MIN_UNITS
PER_ITEM_COLUMNS = ("generator", "condition", "prompt_id", "prompt", "seed", "metric", "score", "lower_better")


@dataclass
class ImageRef:
    """One thumbnail in a report grid: a cached image plus a caption and the scores shown under it."""

    image_key: str
    caption: str
    scores: dict[str, float] = field(default_factory=dict)
    group: str = ""  # column label in a grid, e.g. the generator spec


@dataclass
class Table:
    """A result table and how to read it.

    ``effects`` maps each effect column (``X`` with ``X_ci_low``/``X_ci_high``)
    to the column of ``frame`` holding its Holm-adjusted p-value; a cell of
    ``X`` is significant iff that p-value is below :data:`ALPHA`.
    ``n_units_column`` names the column holding the number of independent
    units each row rests on (its CI is not shown below ``MIN_UNITS``).
    """

    frame: pd.DataFrame
    footnote: str = ""
    unit: str = ""  # "prompt", "image", "participant" or "" (no inference: counts, listings)
    effects: dict[str, str] = field(default_factory=dict)
    n_units_column: str = ""
    #: effect column -> its unadjusted p-value column (the test at the inference unit), Holm's input
    p_values: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.n_units_column and "n_units" in getattr(self.frame, "columns", ()):
            self.n_units_column = "n_units"  # the conventional column: CIs below MIN_UNITS are not shown

    def significant(self, column: str) -> list[bool]:
        """Per row: the effect in ``column`` is significant under the table's one decision rule."""
        import numpy as np

        p = self.frame[self.effects[column]].to_numpy(dtype=float)
        return [bool(np.isfinite(v) and v < ALPHA) for v in p]

    def too_few_units(self) -> list[bool]:
        """Per row: fewer than MIN_UNITS independent units (no 95% CI is shown)."""
        if not self.n_units_column or self.n_units_column not in self.frame:
            return [False] * len(self.frame)
        return [too_few_units(v) for v in self.frame[self.n_units_column]]

    def describe(self) -> dict[str, Any]:
        return {"footnote": self.footnote, "unit": self.unit, "effects": dict(self.effects),
                "n_units_column": self.n_units_column, "p_values": dict(self.p_values)}


@dataclass
class Headline:
    """The grid that heads a run: ``rows x columns`` of estimates with CIs, p-values and the units behind each.

    ``signed``: the quantity is an effect (0 = no effect), so cells carry a
    test; ``p_value`` holds each cell's test at the inference unit and
    ``p_adjusted`` its Holm adjustment over the grid's cells. ``significant``
    and ``bold`` follow from them (see :meth:`bold`); a level (a mean score,
    an accuracy, FID) has no test, so no cell is marked or bold.
    """

    source: str  # the table it summarises
    quantity: str
    estimate: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    higher_better: dict[str, bool | None]  # per column; None: no direction
    signed: bool = False
    footnote: str = ""
    p_value: pd.DataFrame | None = None
    p_adjusted: pd.DataFrame | None = None
    n_units: pd.DataFrame | None = None
    unit: str = ""
    n_images: int | None = None

    @property
    def significant(self) -> pd.DataFrame:
        """True where the cell's Holm-adjusted p-value is below ALPHA (never for levels or untested cells)."""
        import numpy as np
        import pandas as pd


        if not self.signed or self.p_adjusted is None:
            return pd.DataFrame(False, index=self.estimate.index, columns=self.estimate.columns)
        p = self.p_adjusted.to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            return pd.DataFrame(np.isfinite(p) & (p < ALPHA), index=self.estimate.index, columns=self.estimate.columns)

    @property
    def bold(self) -> pd.DataFrame:
        """The best *significant* cell of each column with a direction; a tie for best, or no significant cell,
        gives the column no bold (a level without a test is never bold)."""
        import pandas as pd

        mask = pd.DataFrame(False, index=self.estimate.index, columns=self.estimate.columns)
        significant = self.significant
        for col in self.estimate.columns:
            higher = self.higher_better.get(str(col))
            values = self.estimate[col].where(significant[col])
            if higher is None or not values.notna().any():
                continue
            best = values.max() if higher else values.min()
            winners = values == best
            if int(winners.sum()) == 1:
                mask[col] = winners
        return mask

    def too_few_units(self) -> pd.DataFrame:
        """True where the cell rests on fewer than MIN_UNITS units (its CI is not shown)."""
        import pandas as pd

        if self.n_units is None:
            return pd.DataFrame(False, index=self.estimate.index, columns=self.estimate.columns)
        return self.n_units.map(too_few_units).astype(bool)


@dataclass
class PerItemScores:
    """One metric score per image, in the fixed columns :data:`PER_ITEM_COLUMNS`: what runs are paired on.

    ``condition`` is "" where a benchmark has none (sweeps put the target
    level there, so only images made at the same level are paired).
    """

    frame: pd.DataFrame

    def __post_init__(self) -> None:
        if "prompt" not in self.frame.columns:  # a plugin's table without the text: such items are never paired
            self.frame = self.frame.assign(prompt="")
        missing = [c for c in PER_ITEM_COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"PerItemScores needs the columns {', '.join(PER_ITEM_COLUMNS)}; missing "
                             f"{', '.join(missing)}")
        self.frame = self.frame[list(PER_ITEM_COLUMNS)].reset_index(drop=True)


@dataclass
class Result:
    """What a benchmark's analysis produced; the report renders every field.

    ``tables`` holds the frames (name -> DataFrame); :meth:`add_table` stores a
    :class:`Table` and its frame, :meth:`table` returns it (a frame set
    directly, e.g. by an older plugin, reads as a Table with no footnote).
    """

    benchmark: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    grids: dict[str, list[ImageRef]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # caveats shown verbatim in the report
    table_info: dict[str, Table] = field(default_factory=dict)
    headlines: list[Headline] = field(default_factory=list)  # the first heads the run
    per_item: PerItemScores | None = None

    def add_table(self, name: str, table: Table | pd.DataFrame, **fields: Any) -> Table:
        """Store ``table`` (a Table, or a DataFrame plus Table fields) under ``name``."""
        if not isinstance(table, Table):
            table = Table(table, **fields)
        self.tables[name] = table.frame
        self.table_info[name] = table
        return table

    def table(self, name: str) -> Table:
        info = self.table_info.get(name)
        frame = self.tables[name]
        if info is not None and info.frame is frame:
            return info
        return Table(frame)

    @property
    def headline(self) -> Headline | None:
        return self.headlines[0] if self.headlines else None
