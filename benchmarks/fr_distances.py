"""FR distances: how far apart are images of the same prompt and seed generated at different targets?

IQA-Adapter paper, supplementary Sec. 13.2 / Fig. 11: the adapter should change
quality-related detail, not the content; a full-reference metric between the
p1 and p99 images of one prompt and seed measures how much actually moved. For
each FR metric we build the targets x targets matrix of mean distances (the
baseline model's image is one more row/column). Default panel: SSIM, LPIPS,
DISTS, PieAPP; the last three need downloaded weights, so offline they are
left out *with a note* and the report says which metrics were used.

The core scores single images only, so pair scores are computed here from the
cached images and cached in the score table under a composite key
``content_key("fr-pair/v1", image_a, image_b)`` with the metric fingerprint:
re-runs and overlapping runs compute each pair once.

Distance convention: lower-is-better metrics (LPIPS, DISTS, PieAPP, GMSD, ...)
are distances already; similarities bounded by 1 (SSIM, FSIM, VSI, ...) become
``1 - value``; other similarities (PSNR) are shown as they are, and the report
says so. Order matters for asymmetric metrics (the first image is the
"distorted" one, the second the reference), so every ordered pair is computed.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import pandas as pd
import torch

from iqabench.analysis.decisions import level_table, long_headline
from iqabench.analysis.stats import describe_method
from iqabench.benchmark import AnalysisContext, PlannedItem, Result, register_benchmark
from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import GeneratorPool
from iqabench.contracts.specs import RunSpec
from iqabench.execution.batching import BatchPolicy, run_batched
from iqabench.execution.oom import is_out_of_memory
from iqabench.metrics import Metric, MetricUnavailableError, build_metric, metric_info, parse_metric_list
from iqabench.store.store import Store, content_key

from .condition_sweep import sweep_targets, target_slots
from .sweeps import Slot, SweepBenchmark, target_label

DEFAULT_FR_PANEL: tuple[str, ...] = ("ssim", "lpips", "dists", "pieapp")


def fr_panel(spec: RunSpec) -> tuple[list[str], bool]:
    """(metric names, explicit?): the FR metrics of ``--metrics``, else the default panel."""
    names = parse_metric_list(spec.metrics)
    full_reference = [n for n in names if metric_info(n).mode == "FR"]
    no_reference = [n for n in names if metric_info(n).mode != "FR"]
    if full_reference and no_reference:
        raise UserInputError("fr-distances compares image pairs with full-reference metrics; "
                             f"{', '.join(no_reference)} is no-reference: drop it from --metrics "
                             "(e.g. --metrics ssim,lpips)")
    return (full_reference, True) if full_reference else (list(DEFAULT_FR_PANEL), False)


def distance_transform(name: str) -> str:
    """How a metric's value becomes a distance: 'value', '1 - value' or 'similarity' (left as is)."""
    info = metric_info(name)
    if info.lower_better:
        return "value"
    upper = (info.score_range or "").split(",")[-1].strip().lstrip("~").strip()
    try:
        if float(upper) == 1.0:
            return "1 - value"
    except ValueError:
        pass
    return "similarity"


def distance_label(name: str) -> str:
    """The name of what a distance column holds: ``1-ssim`` for a similarity shown as 1 - value, else the metric."""
    return f"1-{name}" if distance_transform(name) == "1 - value" else name


def to_distance(values: np.ndarray, transform: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return 1.0 - values if transform == "1 - value" else values


def pair_key(image_a: str, image_b: str) -> str:
    """Score-cache key of the ordered pair (distorted = a, reference = b)."""
    return content_key("fr-pair/v1", image_a, image_b)


def image_tensor(store: Store, key: str) -> torch.Tensor:
    array = np.asarray(store.load_image(key), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def pair_scores(store: Store, metric: Metric, pairs: list[tuple[str, str]], batch_size: int | None = None,
                policy: BatchPolicy | None = None) -> dict[tuple[str, str], float | None]:
    """Metric value for each ordered (image, reference) pair, from the cache or computed and cached.

    Chunks follow the run's batch policy (``policy``, else a fixed ``batch_size``, else 8): an out-of-memory
    error halves the chunk and retries the same pairs (:func:`iqabench.execution.batching.run_batched`), so a too-large
    ``--batch-size`` costs time, never pair scores. Any other error in a chunk -- or an out-of-memory error on a
    single pair -- is recorded as that chunk's pairs' score error, and the other chunks still run.
    """
    policy = policy or BatchPolicy(batch_size or 8)
    fp = metric.fingerprint()
    keys = {p: pair_key(*p) for p in dict.fromkeys(pairs)}
    cached = store.get_scores(keys.values(), metric.name, fp)
    todo = [p for p, k in keys.items() if k not in cached]

    def score_chunk(chunk: list[tuple[str, str]]) -> list[tuple]:
        # Decoded here, one chunk at a time: memory holds one chunk's images, never every pair's up front.
        rows: list[tuple] = []
        by_size: dict[tuple[int, ...], list[tuple[tuple[str, str], torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for a, b in chunk:
            try:
                ta, tb = image_tensor(store, a), image_tensor(store, b)
            except (FileNotFoundError, OSError) as exc:
                rows.append((keys[(a, b)], metric.name, fp, None, f"unreadable image: {exc}"))
                continue
            if ta.shape != tb.shape:
                rows.append((keys[(a, b)], metric.name, fp, None, "images differ in size"))
                continue
            by_size[tuple(ta.shape)].append(((a, b), ta, tb))
        for group in by_size.values():
            try:
                values = metric.score(torch.stack([g[1] for g in group]), torch.stack([g[2] for g in group])).tolist()
                errors = [None] * len(group)
            except Exception as exc:  # one bad batch must not lose the others; record why
                if is_out_of_memory(exc) and len(chunk) > 1:
                    raise  # run_batched halves the chunk and retries these pairs
                values, errors = [None] * len(group), [f"{type(exc).__name__}: {exc}"[:500]] * len(group)
            for (pair, _, _), value, error in zip(group, values, errors, strict=True):
                finite = value is not None and np.isfinite(value)
                rows.append((keys[pair], metric.name, fp, float(value) if finite else None,
                             error or (None if finite else "non-finite value")))
        store.put_scores(rows)
        return rows

    run_batched(todo, score_chunk, policy)
    cached = store.get_scores(keys.values(), metric.name, fp)
    return {p: cached.get(k) for p, k in keys.items()}


def distance_matrix(pairs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Mean ``distance`` per (condition_a, condition_b) as a square matrix in ``order`` (rows: image,
    columns: reference)."""
    matrix = pairs.pivot_table(index="condition_a", columns="condition_b", values="distance", aggfunc="mean")
    matrix = matrix.reindex(index=order, columns=order)
    matrix.index.name, matrix.columns.name = "image", "reference"
    return matrix


def matrix_table(pairs: pd.DataFrame, orders: dict[str, list[str]]) -> pd.DataFrame:
    """Long table of the matrices: mean distance per (generator, metric, image, reference) with a 95% CI.

    The CI is :func:`iqabench.analysis.stats.mean_ci` over the (prompt, seed) groups of
    the cell, clustered by prompt when a prompt has several seeds. ``orders``
    gives each metric's condition order (rows and columns of its matrix).
    """
    from iqabench.analysis.stats import mean_ci

    rows = []
    for (metric, generator), subset in pairs.groupby(["metric", "generator"], sort=False):
        present = set(subset.condition_a)
        for a in [c for c in orders[metric] if c in present]:
            for b in [c for c in orders[metric] if c in present]:
                cell = subset[(subset.condition_a == a) & (subset.condition_b == b)]
                est = mean_ci(cell.distance.to_numpy(float), cell.prompt_id.to_numpy())
                rows.append({"generator": generator, "metric": metric, "image": a, "reference": b,
                             "mean_distance": est.value, "mean_distance_ci_low": est.ci_low,
                             "mean_distance_ci_high": est.ci_high, "n": est.n, "n_units": est.n_clusters,
                             "ci_method": est.method})
    table = pd.DataFrame(rows, columns=["generator", "metric", "image", "reference", "mean_distance",
                                        "mean_distance_ci_low", "mean_distance_ci_high", "n", "n_units", "ci_method"])
    table.insert(2, "quantity", [distance_label(m) for m in table.metric])
    return table


def extreme_pair_table(matrix: pd.DataFrame, lowest: str, highest: str) -> pd.DataFrame:
    """The headline: per (generator, metric), the mean distance between the images at the lowest and the highest
    target (how much the condition moves an image of one prompt and seed), with its CI."""
    pair = matrix[(matrix.image == lowest) & (matrix.reference == highest)].reset_index(drop=True)
    return pair.assign(pair=f"{lowest} vs {highest}")[["generator", "metric", "quantity", "pair", "mean_distance",
                                                       "mean_distance_ci_low", "mean_distance_ci_high", "n",
                                                       "n_units", "ci_method"]]


def distance_footnote(pair: pd.DataFrame, lowest: str, highest: str) -> str:
    """How the distances were made; ``quantity`` names what each column holds (1-ssim = 1 - SSIM)."""
    from iqabench.analysis.decisions import unit_sentence
    from iqabench.analysis.stats import describe_method

    return (f"Mean distance between the {lowest} image (distorted) and the {highest} image (reference) of the same "
            "prompt and seed; quantity names what is averaged (1-ssim = 1 - SSIM: similarities bounded by 1 become "
            "distances). " + describe_method(pair.ci_method.tolist()) + " "
            + unit_sentence("prompt", pair.n_units.to_numpy(float))
            + " Distances are levels: no test, no bold.")


def extremes_typed(pair: pd.DataFrame, lowest: str, highest: str, n_images: int | None = None):
    """The extremes table typed (levels: no test) and the run's headline (generator x quantity, e.g. 1-ssim)."""
    note = distance_footnote(pair, lowest, highest)
    head = long_headline("fr_extremes", pair, row_key="generator", column_key="quantity", value="mean_distance",
                         quantity=f"Mean distance, {lowest} vs {highest} image", signed=False, higher_better=None,
                         footnote=note, unit="prompt", n_images=n_images)
    return level_table(pair, footnote=note, unit="prompt"), head


def matrix_figure(matrix: pd.DataFrame, metric: str, generator: str, what: str):
    """One sequential-colour heatmap (distances are >= 0, so no diverging scale) with each cell's CI; cells whose
    CI includes 0 (the pair is not measurably apart) are hatched and faded."""
    from iqabench.analysis.labels import generator_aliases
    from iqabench.analysis.plotting import heatmap_figure

    mine = matrix[(matrix.metric == metric) & (matrix.generator == generator)]
    order = list(dict.fromkeys(mine.image))

    def grid(column: str) -> pd.DataFrame:
        out = mine.pivot(index="image", columns="reference", values=column).reindex(index=order, columns=order)
        out.index.name, out.columns.name = "image", "reference"
        return out.astype(float)

    # a path target as its file stem, labelled among all the matrix's generators so that two figures' titles never
    # read the same; the title ellipsizes what still overflows
    name = generator_aliases(matrix.generator.astype(str))[str(generator)]
    null = 0.0 if what == "distance" else None
    return heatmap_figure(
        grid("mean_distance"), f"{metric}: mean {what}\n{name}", fmt=".2f", scale="sequential",
        low=grid("mean_distance_ci_low"), high=grid("mean_distance_ci_high"), null=null,
        caption=f"{metric}: mean full-reference {what} between the images of every pair of conditions (same prompt "
                f"and seed; rows: image, columns: reference) for {name}, with its 95% CI (bootstrap over "
                "prompts); sequential colours (distances are >= 0)"
                + ("; hatched, faded cells: the CI includes 0 (not measurably apart); the diagonal (an image against "
                   "itself, exactly 0) is not hatched." if null is not None else "."))


@register_benchmark("fr-distances",
                    description="Targets x targets full-reference distance matrices per metric (paper Fig. 11)")
class FRDistances(SweepBenchmark):
    options = {
        "targets": "quality targets to compare (as in condition-sweep)",
        "include_baseline": "also compare the baseline with itself (default true)",
    }

    def slots(self, spec: RunSpec, generators: GeneratorPool) -> list[Slot]:
        with_baseline = option_flag(spec.options.get("include_baseline", True), "include_baseline")
        return target_slots(spec, generators, self.name, sweep_targets(spec), with_baseline=with_baseline)

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        fr_panel(spec)  # refuse a mixed NR/FR panel before anything is generated
        return super().plan(spec, generators)

    def metrics_for(self, spec: RunSpec, plan: list[PlannedItem]) -> dict[str, list[int]]:
        return {}  # pair metrics are computed in analyze (the core's scoring stage is single-image)

    def analyze(self, ctx: AnalysisContext) -> Result:
        spec = ctx.spec
        slots = self.slots(spec, ctx.generators)
        names, explicit = fr_panel(spec)
        result = Result(self.name)
        if not explicit and set(parse_metric_list(spec.metrics)) - set(names):
            result.notes.append("--metrics named no full-reference metric, so the default panel "
                                f"({', '.join(DEFAULT_FR_PANEL)}) was tried.")
        runtime = ctx.runtime
        metrics: list[Metric] = []
        for name in names:
            try:
                metrics.append(build_metric(name, runtime))
            except MetricUnavailableError as exc:
                if explicit:
                    raise
                result.notes.append(f"{name} left out of the default panel: {exc}")
        if not metrics:
            raise MetricUnavailableError("no full-reference metric of the panel could be built; pass offline ones "
                                         "with --metrics (e.g. ssim,fsim,gmsd)")
        used = [m.name for m in metrics]
        result.notes.insert(0, f"Metrics used: {', '.join(used)}. Distances: " + "; ".join(
            f"{n} = {distance_transform(n).replace('value', n)}" if distance_transform(n) != "similarity"
            else f"{n} is a similarity (higher = closer), shown as is" for n in used) + ".")

        condition = {id(s): ("baseline" if s.role == "baseline" else target_label(s.values["target"])) for s in slots}
        groups: dict[tuple[str, str, int], dict[str, str]] = defaultdict(dict)
        for slot, key in zip(slots, ctx.image_keys, strict=True):
            if ctx.store.has_image(key):
                groups[(slot.generator, slot.item.prompt_id, slot.item.seed)][condition[id(slot)]] = key
        order = (["baseline"] if any(s.role == "baseline" for s in slots) else []) + \
            [target_label(t) for t in sweep_targets(spec)]
        all_pairs = [(ka, kb) for members in groups.values() for ka in members.values() for kb in members.values()]
        rows = []
        n_failed = 0
        for metric in metrics:
            values = pair_scores(ctx.store, metric, all_pairs, policy=runtime.batch)
            transform = distance_transform(metric.name)
            for (generator, prompt_id, seed), members in groups.items():
                for ca, ka in members.items():
                    for cb, kb in members.items():
                        value = values.get((ka, kb))
                        n_failed += value is None
                        value = np.nan if value is None else value
                        rows.append({"metric": metric.name, "generator": generator, "prompt_id": prompt_id,
                                     "seed": seed, "condition_a": ca, "condition_b": cb, "value": value,
                                     "distance": float(to_distance(np.array([value]), transform)[0])})
        pairs = pd.DataFrame(rows)
        if n_failed:
            result.notes.append(f"{n_failed} pair value(s) could not be computed (see the score errors) and were "
                                "left out of the means.")
        conditions_of = {m: order for m in used}
        matrix = matrix_table(pairs, conditions_of) if len(pairs) else pd.DataFrame()
        targets = [target_label(t) for t in sweep_targets(spec)]
        if len(matrix) and len(targets) >= 2:
            table, head = extremes_typed(extreme_pair_table(matrix, targets[0], targets[-1]), targets[0],
                                         targets[-1], len(set(ctx.image_keys)))
            result.add_table("fr_extremes", table)
            result.headlines.append(head)
        for metric in used:
            what = "value" if distance_transform(metric) == "similarity" else "distance"
            generators = list(dict.fromkeys(matrix.generator[matrix.metric == metric])) if len(matrix) else []
            for k, generator in enumerate(generators):
                suffix = "" if k == 0 else f"_{k + 1}"
                result.figures[f"fr_matrix_{_safe(metric)}{suffix}"] = matrix_figure(matrix, metric, generator, what)
        result.add_table("fr_matrix", level_table(matrix, footnote=describe_method(matrix.ci_method.tolist())
                                             if len(matrix) else "", unit="prompt"))
        result.tables["fr_pairs"] = pairs
        result.summary = {
            "metrics_used": used, "metrics_requested": names, "conditions": order,
            "n_groups": len(groups), "n_pairs": len(all_pairs), "n_images": len(set(ctx.image_keys)),
        }
        return result


def option_flag(value: object, name: str) -> bool:
    """A yes/no ``--option``: JSON true/false/1/0 arrive parsed, other spellings (False, no, off) as text."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise UserInputError(f"option {name}={value!r} is not a yes/no value (write {name}=true or {name}=false)")
    return bool(value)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
