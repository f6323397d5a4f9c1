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
