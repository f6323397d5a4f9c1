"""Shared pieces of the sweep benchmarks (seed-consistency, condition-sweep, scale-sweep, fr-distances).

Not a benchmark itself. The important rule lives in :func:`canonical_params`:
a sweep item whose parameter equals the generator's own default is planned
*without* that parameter, so its image key is the key another benchmark (or a
plain ``relgain`` run) already produced. Without it, ``{"target": "p99"}`` and
``{}`` on an adapter whose default target is p99 would be two cache entries of
one identical image, and condition-sweep -> scale-sweep would regenerate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from iqabench.analysis.stats import describe_method, mean_ci
from iqabench.benchmark import AnalysisContext, BaseBenchmark, PlannedItem
from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import Generator, GeneratorPool, WorkItem
from iqabench.contracts.specs import RunSpec

# IQA-Adapter paper Sec. 4.3 / Fig. 4a: the training-set percentiles the adapter is conditioned on.
DEFAULT_TARGETS: tuple[float, ...] = (1, 5, 10, 25, 50, 75, 90, 95, 99)


@dataclass(frozen=True)
class Slot:
    """What one planned image is in a sweep: its generator, role and the swept values."""

    generator: str  # the swept generator (for baseline slots: the generator it is the baseline of)
    role: str  # "baseline" or "generator"
    item: WorkItem
    values: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"target": 99.0, "scale": 0.5}
    source: str = ""  # the generator spec that makes the image (the baseline's spec for baseline slots)

    def planned(self) -> PlannedItem:
        return PlannedItem(self.source or self.generator, self.item)


def generator_specs(spec: RunSpec, generators: GeneratorPool) -> list[str]:
    """The run's generators in canonical spelling, duplicates dropped, order kept."""
    if not spec.generators:
        raise UserInputError("no generator given: pass --generator SPEC (e.g. iqa-adapter:/path/adapter.safetensors)")
    return generators.canonical_list(spec.generators)


def parse_number_list(value: Any, *, name: str, low: float, high: float, prefix: str = "") -> list[float]:
    """``"1,5,p99"`` or ``[1, 5, 99]`` -> ``[1.0, 5.0, 99.0]``, each checked to lie in [low, high]."""
    if value is None:
        raise UserInputError(f"option {name!r} is empty")
    parts: Iterable[Any]
    if isinstance(value, (int, float)):
        parts = [value]
    elif isinstance(value, str):
        parts = [p for p in value.replace(";", ",").replace("/", ",").split(",") if p.strip()]
    else:
        parts = list(value)
    numbers: list[float] = []
    for part in parts:
        text = str(part).strip()
        if prefix and text.lower().startswith(prefix):
            text = text[len(prefix):]
        try:
            number = float(text)
        except ValueError:
            raise UserInputError(f"option {name!r}: {part!r} is not a number (write e.g. {name}=1,5,50,99)") from None
        if not (low <= number <= high) or math.isnan(number):
            raise UserInputError(f"option {name!r}: {number:g} is outside [{low:g}, {high:g}]")
        numbers.append(number)
    if not numbers:
        raise UserInputError(f"option {name!r} names no value (write e.g. {name}=1,5,50,99)")
    return list(dict.fromkeys(numbers))


def parse_targets(value: Any, name: str = "targets") -> list[float]:
    """Target percentiles of the adapter's training-set score distribution (``p`` prefix optional)."""
    return parse_number_list(value, name=name, low=0.0, high=100.0, prefix="p")


def target_label(percentile: float) -> str:
    """50.0 -> ``"p50"``: the spelling the IQA-Adapter generator takes as ``target``."""
    return f"p{percentile:g}"


def canonical_params(generator: Generator, params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop params equal to the generator's own default so equal images get equal cache keys."""
    defaults = getattr(generator, "options", {}) or {}
    out: dict[str, Any] = {}
    for key, value in params.items():
        default = defaults.get(key, _MISSING)
        if default is not _MISSING and _same(value, default):
            continue
        out[key] = value
    return out


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def require_item_params(generator: Generator, names: Sequence[str], benchmark: str) -> None:
    """Refuse at plan time a generator that cannot take the swept params (instead of N failed images)."""
    accepted = getattr(generator, "item_params", None)
    if accepted is None:
        return
    missing = [n for n in names if n not in accepted]
    if missing:
        raise UserInputError(
            f"benchmark {benchmark!r} sweeps {', '.join(missing)}, which generator {generator.name!r} does not take; "
            "use a quality-conditioned generator such as iqa-adapter:/path/adapter.safetensors"
        )


def baseline_of(generator: str, spec: RunSpec, generators: GeneratorPool) -> str:
    baseline = generators.baseline(generator, spec.baseline)
    if baseline == generator:
        raise UserInputError(f"generator {generator!r} is its own baseline; pass a different --baseline")
    return baseline


def sweep_slots(spec: RunSpec, generators: GeneratorPool, benchmark: str, swept: list[dict[str, Any]], *,
                with_baseline: bool = True, param_names: Sequence[str] = ()) -> list[Slot]:
    """Baseline images (no params) then one image per item x swept point, for every generator.

    ``swept`` holds dicts of the swept values in the generator's own spelling, e.g.
    ``{"target": "p99", "scale": 0.5}``; the Slot keeps the numeric values.
    """
    items = BaseBenchmark().work_items(spec)
    slots: list[Slot] = []
    for name in generator_specs(spec, generators):
        generator = generators.get(name)
        if param_names:
            require_item_params(generator, param_names, benchmark)
        if with_baseline:
            baseline = baseline_of(name, spec, generators)
            slots += [Slot(name, "baseline", WorkItem(i.prompt_id, i.prompt, i.seed, {}), {}, baseline)
                      for i in items]
        for point in swept:
            params = canonical_params(generator, point)
            values = {k: _numeric(v) for k, v in point.items()}
            slots += [Slot(name, "generator", WorkItem(i.prompt_id, i.prompt, i.seed, params), values, name)
                      for i in items]
    return slots


def _numeric(value: Any) -> Any:
    if isinstance(value, str) and value[:1].lower() == "p":
        try:
            return float(value[1:])
        except ValueError:
            return value
    return value


def planned(slots: list[Slot]) -> list[PlannedItem]:
    return [s.planned() for s in slots]


class SweepBenchmark(BaseBenchmark):
    """A benchmark whose plan is a list of :class:`Slot` built from the spec alone.

    ``plan`` and ``analyze`` both rebuild the slots with :meth:`slots`, so the
    analysis pairs slot i with image key i without storing the plan anywhere
    (:func:`score_frame` refuses a plan that changed in between).
    """

    def slots(self, spec: RunSpec, generators: GeneratorPool) -> list[Slot]:
        raise NotImplementedError

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        return planned(self.slots(spec, generators))

    def score_table(self, ctx: AnalysisContext) -> tuple[list[str], pd.DataFrame]:
        """The run's metrics and the long score table of the slots (:func:`score_frame`)."""
        metrics = list(ctx.metric_fingerprints)
        return metrics, score_frame(ctx, self.slots(ctx.spec, ctx.generators), metrics)


def score_frame(ctx: AnalysisContext, slots: list[Slot], metrics: Sequence[str]) -> pd.DataFrame:
    """Long table: one row per (planned image, metric) with the slot's swept values and the cached score."""
    if len(slots) != len(ctx.image_keys):
        raise RuntimeError("the plan changed between planning and analysis; re-run the benchmark")
    scores = {m: ctx.scores(m) for m in metrics}
    rows = []
    for slot, key in zip(slots, ctx.image_keys, strict=True):
        base = {"generator": slot.generator, "role": slot.role, "source": slot.source or slot.generator,
                "prompt_id": slot.item.prompt_id, "prompt": slot.item.prompt, "seed": slot.item.seed,
                "image_key": key, **slot.values}
        for m in metrics:
            value = scores[m].get(key)
            rows.append({**base, "metric": m, "score": np.nan if value is None else float(value)})
    return pd.DataFrame(rows)


def identical_settings(ctx: AnalysisContext, frame: pd.DataFrame, by: Sequence[str], setting: str) -> dict[tuple, str]:
    """Groups of swept images (one per value of ``by``) whose every setting made the same pixels for each
    (prompt, seed): group -> the note saying so (:func:`iqabench.analysis.identical.identical_sentence`).

    ``frame`` is the generator rows of :func:`score_frame`. Such a group's correlation or gap compares
    nothing (issue 25: identical sides are never a measured zero); its cells are blanked by the caller.
    """
    from iqabench.analysis.identical import identical_sentence

    rows = frame[frame.role == "generator"].drop_duplicates("image_key")
    notes: dict[tuple, str] = {}
    for group, part in rows.groupby(list(by), sort=False):
        group = group if isinstance(group, tuple) else (group,)
        values = sorted(part[setting].unique())
        if len(values) < 2:
            continue
        pairs = []
        for _, item in part.groupby(["prompt_id", "seed"], sort=False):
            item = item.sort_values(setting)
            pairs += [(item.image_key.iloc[0], key) for key in item.image_key.iloc[1:]]
        same, n_pairs = ctx.pixels.all_identical(pairs)
        if same:
            where = ", ".join(f"{name} {_shown(value)}" for name, value in zip(by, group, strict=True))
            notes[group] = identical_sentence(f"{where}, at {setting} " + ", ".join(_shown(v) for v in values),
                n_pairs, f"the {setting} has no effect on these images",
                "check that the swept setting reaches the generator (e.g. an adapter scale above 0)")
    return notes


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def missing_scores_note(frame: pd.DataFrame, cause: str = "") -> str | None:
    """The note counting the (image, metric) scores of ``frame`` that are missing (and left out); None if none."""
    n_missing = int(frame.score.isna().sum())
    if not n_missing:
        return None
    return f"{n_missing} (image, metric) score(s) are missing{f' ({cause})' if cause else ''} and were left out."


def mean_with_ci(frame: pd.DataFrame, by: list[str], value: str = "score") -> pd.DataFrame:
    """Mean, 95% bootstrap CI (clustered by prompt when a group holds several seeds) and count per group.

    NaNs are dropped and counted; the method is in ``ci_method`` and the frame's footnote.
    """
    rows = []
    for keys, group in frame.groupby(by, sort=False, dropna=False):
        values = group[value].to_numpy(dtype=float)
        est = mean_ci(values, group["prompt_id"].to_numpy() if "prompt_id" in group else None)
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip(by, keys, strict=True)), "mean": est.value, "mean_ci_low": est.ci_low,
                     "mean_ci_high": est.ci_high, "n": est.n, "n_units": est.n_clusters,
                     "n_missing": int(values.size - est.n),
                     "ci_method": est.method})
    return pd.DataFrame(rows)


def means_footnote(means: pd.DataFrame) -> str:
    """How a table of means (levels: no test, no bold) got its brackets."""
    return describe_method(means["ci_method"].tolist() if len(means) else [])


def sweep_per_item(frame: pd.DataFrame):
    """The sweep's per-image scores as PerItemScores (``condition``: the swept setting; baselines "baseline")."""
    from iqabench.contracts.results import PerItemScores
    from iqabench.metrics import metric_info

    lower = {m: metric_info(m).lower_better for m in frame.metric.unique()}
    return PerItemScores(frame.assign(condition=frame["condition"].astype(str),
                                      lower_better=frame.metric.map(lower)))


def new_figure(n_panels: int, *, width: float = 4.2, height: float = 3.3, max_cols: int = 3) -> tuple[Figure, list]:
    """A bare Agg figure with one axis per panel (no pyplot state; see iqabench/analysis/plotting.py)."""
    n_panels = max(1, n_panels)
    cols = min(max_cols, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def grid_refs(ctx: AnalysisContext, frame: pd.DataFrame, group_col: str):
    """Thumbnails: every (prompt, seed) pair as a row, one column per value of ``group_col``.

    No cap here: the report shows the first rows, says "Showing k of n" and keeps the rest behind "Show all"
    (reports/render.py); cutting rows here would make it report a wrong n.
    """
    from iqabench.analysis.labels import generator_aliases
    from iqabench.benchmark import ImageRef

    wide = frame.pivot_table(index="image_key", columns="metric", values="score", aggfunc="first")
    refs: list[ImageRef] = []
    # several generators (adapters) share prompts and seeds: the row label names the generator too, else the
    # grid repeats "prompt (seed 0)" rows that differ by something the reader cannot see; a baseline image
    # shared by two adapters then shows in both rows
    # (only when a column holds several generators' images: seed-consistency's columns are the generators)
    by_generator = "generator" in frame and bool((frame.groupby(group_col)["generator"].nunique() > 1).any())
    first = frame.drop_duplicates(["generator", "image_key"] if by_generator else "image_key")
    aliases = generator_aliases(first["generator"].astype(str)) if by_generator else {}
    keys = ["generator", "prompt_id", "seed"] if by_generator else ["prompt_id", "seed"]
    for _, rows in first.groupby(keys, sort=False):
        for _, row in rows.iterrows():
            if not ctx.store.has_image(row.image_key):
                continue
            shown = {m: float(v) for m, v in wide.loc[row.image_key].items() if np.isfinite(v)}
            caption = f"{row.prompt} (seed {row.seed})"
            if by_generator:
                caption = f"{aliases[str(row.generator)]}: {caption}"
            refs.append(ImageRef(row.image_key, caption, shown, group=str(row[group_col])))
    return refs
