"""Statistics shared by benchmarks: relative gains, bootstrap confidence intervals, paired tests.

Why clustering matters: a run with several seeds per prompt does not hold
independent images. Images of one prompt share its difficulty, so a bootstrap
that resamples images treats ``seeds x prompts`` as the sample size and gives
intervals that are too narrow by up to ``sqrt(seeds)``. When some prompt has
more than one image, ``mean_ci`` resamples *prompts* (the cluster bootstrap;
Davison & Hinkley 1997, Sec. 3.8) and the statistic is the pooled mean of the
images of the drawn prompts. Otherwise it resamples images. Either way the
interval is scipy's BCa (bias-corrected and accelerated; Efron 1987) when it
applies, and the plain percentile interval when BCa is undefined (fewer than 3
units, a degenerate jackknife) or too costly (its jackknife is quadratic in the
number of units). The method used is returned, so every table can name it.

Tests run at the same unit (:func:`unit_test`: per-prompt means when seeds
repeat; :func:`cluster_permutation_p` for correlations), and one table's tests
are decided together by :func:`decide` (Holm, statsmodels' ``multipletests``).
An Estimate's CI is descriptive: no mark is ever read from it (docs/statistics.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..contracts.results import ALPHA, MIN_UNITS, too_few_units  # noqa: F401 - re-exported

# Below this |f(x)| a relative gain is meaningless (division by ~0); such items are excluded and counted.
RELGAIN_EPS = 1e-6
N_RESAMPLES = 2000
CONFIDENCE = 0.95
CI_LEVEL_TEXT = f"{CONFIDENCE:.0%}"
# BCa's jackknife recomputes the statistic once per unit; above this many units use the percentile interval.
BCA_MAX_UNITS = 2000
# ALPHA (the one decision rule), MIN_UNITS and too_few_units are part of the result contract: they live in
# iqabench.contracts.results (below this layer) and are re-exported here for the analyses.


@dataclass(frozen=True)
class RelGainItems:
    """Per-item relative gains (%) and which items were usable."""

    gains: np.ndarray  # NaN where not usable
    usable: np.ndarray  # bool
    n_near_zero: int
    n_negative_base: int


@dataclass(frozen=True)
class Estimate:
    """A mean with its confidence interval, the sample behind it and how the interval was computed."""

    value: float
    ci_low: float
    ci_high: float
    n: int  # finite values used
    n_clusters: int  # prompts when clustered, else == n
    method: str  # "BCa", "percentile", "cluster BCa", "cluster percentile", "stratified cluster percentile", "none"


def relative_gains(base: np.ndarray, method: np.ndarray, lower_better: bool, eps: float = RELGAIN_EPS) -> RelGainItems:
    """(f(x') - f(x)) / |f(x)| * 100, sign flipped for lower-is-better metrics so positive means better.

    The paper's RelGain divides by f(x). For metrics that can be negative
    (e.g. some learned IQA heads) dividing by a negative f(x) would flip the
    sign of the gain, so we divide by |f(x)|: an improvement is then positive
    whatever the sign of the baseline score (identical to the paper whenever
    f(x) > 0). Items with |f(x)| < eps are excluded and reported, not averaged.
    """
    base = np.asarray(base, dtype=np.float64)
    method = np.asarray(method, dtype=np.float64)
    finite = np.isfinite(base) & np.isfinite(method)
    near_zero = finite & (np.abs(base) < eps)
    usable = finite & ~near_zero
    gains = np.full(base.shape, np.nan)
    gains[usable] = (method[usable] - base[usable]) / np.abs(base[usable]) * 100.0
    if lower_better:
        gains = -gains
    return RelGainItems(gains, usable, int(near_zero.sum()), int((finite & (base < -eps)).sum()))


def _pooled_mean(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the images of the drawn prompts (a ratio estimator: prompts may hold different numbers of seeds)."""
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis)


def mean_ci(values: Sequence[float] | np.ndarray, clusters: Sequence[object] | np.ndarray | None = None, *,
            n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0,
            method: str = "auto") -> Estimate:
    """Mean of ``values`` (NaNs dropped) with a bootstrap CI; clustered by ``clusters`` (e.g. prompt ids).

    ``method``: ``"auto"`` (BCa where it applies, else percentile), ``"BCa"`` or ``"percentile"``.
    Clustering is used only when some cluster holds more than one value; with
    one value per cluster it is the ordinary bootstrap. Deterministic for a
    given ``seed``.
    """
    from scipy import stats

    if method not in ("auto", "BCa", "percentile"):
        raise ValueError(f"method must be 'auto', 'BCa' or 'percentile', not {method!r}")
    values = np.asarray(values, dtype=np.float64).ravel()
    if clusters is not None:
        clusters = np.asarray(clusters, dtype=object).ravel()
        if clusters.shape != values.shape:
            raise ValueError(f"clusters has {clusters.size} labels for {values.size} values; give one per value")
    keep = np.isfinite(values)
    values = values[keep]
    n = int(values.size)
    point = float(values.mean()) if n else float("nan")
    clustered = False
    if clusters is not None and n:
        index: dict[str, int] = {}  # clusters numbered in order of first appearance
        inverse = np.array([index.setdefault(str(c), len(index)) for c in clusters[keep]], dtype=np.intp)
        clustered = len(index) < n
    if clustered:
        sums = np.bincount(inverse, weights=values)
        counts = np.bincount(inverse).astype(np.float64)
        data, statistic, units, prefix = (sums, counts), _pooled_mean, len(index), "cluster "
    else:
        data, statistic, units, prefix = (values,), _mean, n, ""
    if units < 2:
        return Estimate(point, float("nan"), float("nan"), n, units, "none")
    if np.ptp(values) == 0:  # every resample has the same mean; the interval is the point
        return Estimate(point, point, point, n, units, prefix + "percentile")
    use_bca = method == "BCa" or (method == "auto" and 3 <= units <= BCA_MAX_UNITS)
    for name in (["BCa"] if use_bca else []) + ["percentile"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by falling back below
            res = stats.bootstrap(data, statistic, paired=clustered, vectorized=True, n_resamples=n_resamples,
                                  confidence_level=confidence, method=name, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return Estimate(point, low, high, n, units, prefix + name)
    return Estimate(point, float("nan"), float("nan"), n, units, "none")


def mean_of_strata_ci(values: Sequence[float] | np.ndarray, strata: Sequence[object] | np.ndarray,
                      clusters: Sequence[object] | np.ndarray | None = None, *, n_resamples: int = N_RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """The unweighted mean of per-stratum means (GenEval's overall score: the mean of task accuracies), with a CI.

    Stratified bootstrap: each resample redraws the clusters (prompts) of every
    stratum (task) within that stratum, so every task keeps its size and the
    estimate keeps its definition. Percentile interval (BCa's jackknife is not
    defined for a stratified statistic in scipy). NaN values are dropped.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    strata = np.asarray(strata, dtype=object).ravel()
    clusters = np.arange(values.size) if clusters is None else np.asarray(clusters, dtype=object).ravel()
    if not (strata.shape == clusters.shape == values.shape):
        raise ValueError("values, strata and clusters need one entry each per value")
    keep = np.isfinite(values)
    values, strata, clusters = values[keep], strata[keep], clusters[keep]
    names = list(dict.fromkeys(str(x) for x in strata))
    if not names:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0, "none")
    rng = np.random.default_rng(seed)
    draws, point, units = [], [], 0
    for name in names:
        mine = np.array([str(x) == name for x in strata])
        index: dict[str, int] = {}
        inverse = np.array([index.setdefault(str(c), len(index)) for c in clusters[mine]], dtype=np.intp)
        sums = np.bincount(inverse, weights=values[mine])
        counts = np.bincount(inverse).astype(np.float64)
        units += len(index)
        point.append(sums.sum() / counts.sum())
        idx = rng.integers(0, len(index), size=(n_resamples, len(index)))
        draws.append(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
    value = float(np.mean(point))
    if units - len(names) < 1:  # every stratum holds a single cluster: nothing to resample
        return Estimate(value, float("nan"), float("nan"), int(values.size), units, "none")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.mean(draws, axis=0), [alpha, 1.0 - alpha])
    return Estimate(value, float(low), float(high), int(values.size), units, "stratified cluster percentile")


def bootstrap_ci(values: np.ndarray, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0,
                 clusters: Sequence[object] | np.ndarray | None = None) -> tuple[float, float]:
    """(low, high) of ``mean_ci``: BCa bootstrap CI of the mean, clustered when ``clusters`` repeat."""
    est = mean_ci(values, clusters, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return est.ci_low, est.ci_high


def describe_method(methods: Sequence[str] | str, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                    cluster: str = "prompts (cluster bootstrap: several seeds per prompt)", units: str = "images",
                    helper: str = "mean_ci") -> str:
    """One sentence for a table footnote naming how its intervals were computed (``cluster``: the resampled unit
    when clustered, ``units`` otherwise; ``helper``: the iqabench.analysis.stats function that computed them)."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    used = [m for m in dict.fromkeys(methods) if m != "none"]
    if not used:
        return "No confidence intervals (fewer than 2 independent units)."
    parts = []
    for m in used:
        kind = "BCa" if m.endswith("BCa") else "percentile"
        if m.startswith("stratified"):
            parts.append(f"{kind} bootstrap over prompts within each task (stratified)")
            continue
        over = cluster if m.startswith("cluster") else units
        parts.append(f"{kind} bootstrap over {over}")
    return (f"Brackets: {confidence:.0%} CI, " + "; ".join(parts)
            + f", {n_resamples} resamples (iqabench.analysis.stats.{helper}).")


def paired_statistics(base: np.ndarray, method: np.ndarray, lower_better: bool,
                      clusters: Sequence[object] | np.ndarray | None = None) -> dict[str, float]:
    """The paired comparison of ACPO's Table 2: means, improvement, its std, paired t, Wilcoxon, win rate.

    ``improvement`` is mean(method - base), negated for lower-is-better metrics
    so positive means better. Both tests are two-sided and run at the
    inference unit (:func:`unit_test`): with several seeds per prompt
    (``clusters`` repeat) the paired t-test and the Wilcoxon signed-rank test
    are computed on the per-prompt mean differences, so n is the number of
    prompts -- the same unit the bootstrap CI resamples; with one image per
    prompt they are the ordinary paired tests over images. ``win_rate`` is the
    share of items improved (ties count as half a win). Pairs with a missing
    score are dropped.
    """
    base = np.asarray(base, dtype=np.float64)
    method = np.asarray(method, dtype=np.float64)
    keep = np.isfinite(base) & np.isfinite(method)
    base, method = base[keep], method[keep]
    groups = None if clusters is None else np.asarray(clusters, dtype=object)[keep]
    diff = method - base
    if lower_better:
        diff = -diff
    n = int(diff.size)
    est = mean_ci(diff, groups)
    test = unit_test(diff, groups)
    return {"n_pairs": n, "n_units": test.n_units, "unit": test.unit, "n_images": n,
            "baseline_mean": float(base.mean()) if n else float("nan"),
            "generator_mean": float(method.mean()) if n else float("nan"),
            "improvement": float(diff.mean()) if n else float("nan"),
            "improvement_ci_low": est.ci_low, "improvement_ci_high": est.ci_high,
            "improvement_std": float(diff.std(ddof=1)) if n > 1 else float("nan"),
            "t_statistic": test.t_statistic, "p_value": test.p_value,
            "wilcoxon_statistic": test.wilcoxon_statistic, "wilcoxon_p_value": test.wilcoxon_p_value,
            "win_rate": float(((diff > 0) + 0.5 * (diff == 0)).mean()) if n else float("nan"),
            "ci_method": est.method}


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979) by statsmodels' ``multipletests(method="holm")``; NaNs stay
    NaN and do not count as tests.

    Controls the family-wise error rate across one table of comparisons
    without assuming independence. Delegating to statsmodels keeps every mark a
    table shows reproducible with that one call.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return out


def decide(p_values: Sequence[float] | np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(Holm-adjusted p, significant) for one table's family of tests: the one decision rule every mark follows.

    ``significant`` is False where the p-value is NaN (no test was possible).
    """
    adjusted = holm(p_values)
    with np.errstate(invalid="ignore"):
        return adjusted, np.isfinite(adjusted) & (adjusted < alpha)


def inference_unit(clusters: Sequence[object] | np.ndarray | None, n: int | None = None) -> str:
    """"prompt" when some prompt holds several images (seeds repeat within prompts), else "image"."""
    if clusters is None:
        return "image"
    labels = [str(c) for c in np.asarray(clusters, dtype=object).ravel()]
    return "prompt" if len(set(labels)) < len(labels) else "image"


@dataclass(frozen=True)
class UnitTest:
    """A two-sided test that the mean of ``values`` is 0, computed on one value per inference unit."""

    t_statistic: float
    p_value: float  # one-sample t on the unit means
    wilcoxon_p_value: float  # Wilcoxon signed-rank on the unit means (zero differences dropped)
    wilcoxon_statistic: float
    n_units: int
    n_images: int
    unit: str  # "prompt" or "image"


def unit_means(values: Sequence[float] | np.ndarray,
               clusters: Sequence[object] | np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """One value per inference unit: the mean of each prompt's finite values when prompts repeat, else the values.

    Why: seeds of one prompt share its difficulty, so a test over images counts
    ``prompts x seeds`` as independent and its p-value is too small; the mean
    per prompt is the independent observation (the same unit the CI resamples).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(values)
    if clusters is None:
        return values[keep], "image"
    labels = np.asarray(clusters, dtype=object).ravel()
    if labels.shape != values.shape:
        raise ValueError(f"clusters has {labels.size} labels for {values.size} values; give one per value")
    labels = labels[keep]
    unit = inference_unit(labels)
    if unit == "image":
        return values[keep], unit
    index: dict[str, int] = {}
    inverse = np.array([index.setdefault(str(c), len(index)) for c in labels], dtype=np.intp)
    return np.bincount(inverse, weights=values[keep]) / np.bincount(inverse), unit


def unit_test(values: Sequence[float] | np.ndarray,
              clusters: Sequence[object] | np.ndarray | None = None) -> UnitTest:
    """Two-sided one-sample t and Wilcoxon signed-rank tests of mean 0, on one value per unit (``unit_means``).

    For paired differences this is the paired t-test on per-prompt mean
    differences; n is the number of units, never the number of images.
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64).ravel()
    means, unit = unit_means(values, clusters)
    n_images = int(np.isfinite(values).sum())
    t_stat = p = w_p = w_stat = float("nan")
    if means.size > 1 and np.ptp(means) > 0:
        test = stats.ttest_1samp(means, 0.0)
        t_stat, p = float(test.statistic), float(test.pvalue)
    elif means.size > 1 and means[0] != 0:
        t_stat, p = (float("inf") if means[0] > 0 else float("-inf")), 0.0  # every unit the same non-zero value
    if np.count_nonzero(means) >= 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-sample / exact-distribution notes
            w = stats.wilcoxon(means, zero_method="wilcox")
        w_p, w_stat = float(w.pvalue), float(w.statistic)
    return UnitTest(t_stat, p, w_p, w_stat, int(means.size), n_images, unit)


def cluster_permutation_p(statistic: Callable[[np.ndarray, np.ndarray], float], x: Sequence[float] | np.ndarray,
                          y: Sequence[float] | np.ndarray, clusters: Sequence[object] | np.ndarray | None = None, *,
                          n_resamples: int = N_RESAMPLES, seed: int = 0) -> float:
    """Two-sided permutation p-value of ``statistic(x, y)`` (e.g. a correlation), permuting ``y`` within clusters.

    Under "no association within a prompt" the scores of one prompt are
    exchangeable across its conditions, so shuffling them inside each prompt
    keeps every prompt's level and spread (what makes images of one prompt
    alike) and breaks only the association tested. With no clusters it is the
    ordinary permutation test. p = (1 + #|T*| >= |T|) / (1 + resamples).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    labels = np.zeros(x.size, dtype=object) if clusters is None else np.asarray(clusters, dtype=object).ravel()[keep]
    observed = statistic(x, y)
    if x.size < 3 or not np.isfinite(observed):
        return float("nan")
    groups = [np.flatnonzero(labels == c) for c in dict.fromkeys(labels.tolist())]
    rng = np.random.default_rng(seed)
    hits = 0
    shuffled = y.copy()
    for _ in range(n_resamples):
        for rows in groups:
            shuffled[rows] = y[rng.permutation(rows)]
        value = statistic(x, shuffled)
        hits += bool(np.isfinite(value) and abs(value) >= abs(observed) - 1e-12)
    return (1 + hits) / (1 + n_resamples)


def statistic_ci(statistic: Callable[..., float], *columns: Sequence[float] | np.ndarray,
                 clusters: Sequence[object] | np.ndarray | None = None, n_resamples: int = N_RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Percentile bootstrap CI of any statistic of paired columns (a correlation, a ratio), clustered like ``mean_ci``.

    ``statistic(*columns)`` is recomputed on rows drawn with replacement --
    whole clusters (prompts, participants) when some cluster holds several
    rows, else single rows -- so a correlation over ``seeds x prompts`` images
    gets the width that ``prompts`` independent units warrant. Unlike
    ``scipy.stats.bootstrap`` it drops resamples where the statistic is
    undefined (e.g. a Spearman correlation of a resample whose scores are all
    tied) instead of returning a NaN interval; the interval is NaN when more
    than half of the resamples are undefined. Rows with a NaN in any column are
    dropped first.
    """
    arrays = [np.asarray(c, dtype=np.float64).ravel() for c in columns]
    if not arrays or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("statistic_ci needs one or more columns of equal length")
    keep = np.all([np.isfinite(a) for a in arrays], axis=0)
    arrays = [a[keep] for a in arrays]
    n = int(keep.sum())
    point = float(statistic(*arrays)) if n else float("nan")
    labels = np.arange(n) if clusters is None else np.asarray(clusters, dtype=object).ravel()[keep]
    index: dict[str, int] = {}
    inverse = np.array([index.setdefault(str(c), len(index)) for c in labels], dtype=np.intp)
    units = len(index)
    prefix = "cluster " if units < n else ""
    if units < 2 or not np.isfinite(point):
        return Estimate(point, float("nan"), float("nan"), n, units, "none")
    rows_of = [np.flatnonzero(inverse == u) for u in range(units)]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, units, (n_resamples, units))
    draws = np.full(n_resamples, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-input warnings of resamples that are dropped below
        if getattr(statistic, "batched", False) and len({r.size for r in rows_of}) == 1:
            # equal clusters (every prompt has all its seeds): all resamples at once, one row each
            members = np.stack(rows_of)
            for start in range(0, n_resamples, 256):
                rows = members[picks[start:start + 256]].reshape(len(picks[start:start + 256]), -1)
                draws[start:start + 256] = statistic(*(a[rows] for a in arrays))
        else:
            for r in range(n_resamples):
                rows = np.concatenate([rows_of[u] for u in picks[r]])
                draws[r] = statistic(*(a[rows] for a in arrays))
    finite = draws[np.isfinite(draws)]
    if finite.size < n_resamples / 2:
        return Estimate(point, float("nan"), float("nan"), n, units, "none")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Estimate(point, float(low), float(high), n, units, prefix + "percentile")


def pearson(x: np.ndarray, y: np.ndarray) -> float | np.ndarray:
    """Pearson correlation along the last axis (NaN where a side is constant). Batched: ``statistic_ci`` passes
    [resamples, n] arrays, so 2,000 resamples cost one call rather than 2,000 calls to scipy."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=-1) / np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    return r if x.ndim > 1 else float(r)


pearson.batched = True  # type: ignore[attr-defined]


def spearman_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                clusters: Sequence[object] | np.ndarray | None = None, **kwargs) -> Estimate:
    """Spearman's rho with a (cluster) bootstrap CI: the Pearson correlation of the ranks, ranked ONCE on the full
    sample and then resampled with ``statistic_ci``.

    Why not re-rank every resample: a bootstrap sample repeats whole clusters,
    and re-ranking the repeated rows adds ties in both variables at once, which
    biases a rank correlation upwards -- with 6 prompts the whole bootstrap
    distribution of a strong correlation can sit above the estimate, so the
    percentile interval does not contain it. Fixed ranks give the same point
    estimate (Spearman's rho is the Pearson correlation of the average ranks)
    and a smooth statistic to resample.
    """
    from scipy.stats import rankdata

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    groups = None if clusters is None else np.asarray(clusters, dtype=object).ravel()[keep]
    return statistic_ci(pearson, rankdata(x[keep]), rankdata(y[keep]), clusters=groups, **kwargs)
