"""Top-k% subsets of the reference set by mean z-scored IQA score (IQA-Adapter paper, Table 5).

Each metric's scores are z-scored over the reference images (sign flipped for
lower-is-better metrics, so higher is always better), the z-scores are averaged
per image, and the top ``k``% images (rounded up, at least 2 so FID is defined)
form the subset. Z-scoring puts metrics on different scales (PIQE 0-100,
entropy 0-8) on equal footing; an image missing any metric's score is left out
of the ranking, and a metric with zero spread contributes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from iqabench.contracts.errors import UserInputError


def mean_z_scores(scores: Mapping[str, Mapping[str, float | None]], lower_better: Mapping[str, bool],
                  keys: Sequence[str]) -> dict[str, float]:
    """image key -> mean z-score over metrics (higher is better), for keys scored by every metric."""
    if not scores:
        raise UserInputError("top-k subsets need at least one IQA metric (e.g. --metrics piqe,entropy)")
    usable = [k for k in keys if all(scores[m].get(k) is not None and np.isfinite(scores[m][k]) for m in scores)]
    if not usable:
        raise UserInputError("no reference image has a score from every metric; see the failures table")
    total = np.zeros(len(usable))
    for metric, values in scores.items():
        v = np.array([values[k] for k in usable], dtype=np.float64)
        std = v.std()
        z = (v - v.mean()) / std if std > 0 else np.zeros_like(v)
        total += -z if lower_better[metric] else z
    return dict(zip(usable, (total / len(scores)).tolist(), strict=True))


def top_fraction(ranking: Mapping[str, float], percent: float) -> list[str]:
    """The best ``percent``% keys by score (ceil, at least 2); ties keep the input order."""
    if not 0 < percent <= 100:
        raise UserInputError(f"top-k percent must be in (0, 100], got {percent}")
    ordered = sorted(ranking, key=lambda k: -ranking[k])  # stable: ties keep input order
    n = min(len(ordered), max(2, math.ceil(len(ordered) * percent / 100)))
    return ordered[:n]
