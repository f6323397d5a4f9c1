"""Statistics shared by benchmarks: relative gains and bootstrap confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this |f(x)| a relative gain is meaningless (division by ~0); such items are excluded and counted.
RELGAIN_EPS = 1e-6


@dataclass(frozen=True)
class RelGainItems:
    """Per-item relative gains (%) and which items were usable."""

    gains: np.ndarray  # NaN where not usable
    usable: np.ndarray  # bool
    n_near_zero: int
    n_negative_base: int


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


def bootstrap_ci(values: np.ndarray, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                 statistic=np.mean) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` over ``values`` (NaNs dropped); (nan, nan) if < 2 values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    stats = statistic(values[idx], axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_statistics(base: np.ndarray, method: np.ndarray, lower_better: bool) -> dict[str, float]:
    """The paired comparison of ACPO's Table 2: means, improvement, its std, paired t, p-value and win rate.

    ``improvement`` is mean(method - base), negated for lower-is-better metrics
    so positive means better; the t-test (scipy's ``ttest_rel``) is two-sided on
    the same signed differences; ``win_rate`` is the share of items improved
    (ties count as half a win). Pairs with a missing score are dropped.
    """
    from scipy import stats

    base = np.asarray(base, dtype=np.float64)
    method = np.asarray(method, dtype=np.float64)
    keep = np.isfinite(base) & np.isfinite(method)
    base, method = base[keep], method[keep]
    diff = method - base
    if lower_better:
        diff = -diff
    n = int(diff.size)
    out = {"n_pairs": n, "baseline_mean": float(base.mean()) if n else float("nan"),
           "generator_mean": float(method.mean()) if n else float("nan"),
           "improvement": float(diff.mean()) if n else float("nan"),
           "improvement_std": float(diff.std(ddof=1)) if n > 1 else float("nan"),
           "t_statistic": float("nan"), "p_value": float("nan"),
           "win_rate": float(((diff > 0) + 0.5 * (diff == 0)).mean()) if n else float("nan")}
    if n > 1 and np.any(diff != diff[0]):
        test = stats.ttest_rel(method, base) if not lower_better else stats.ttest_rel(base, method)
        out["t_statistic"], out["p_value"] = float(test.statistic), float(test.pvalue)
    return out
