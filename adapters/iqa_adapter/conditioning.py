"""Quality input of IQA-Adapter: score statistics, z-scoring, target syntax and positional encoding.

The adapter never sees raw IQA scores. Each score is z-scored with the mean and
std of the training set (paper Sec. 3.2; the released adapters used CC3M, whose
statistics are vendored as ``iqabench/data/cc3m_metric_stats.csv``), optionally
followed by a constant 1.0 "conditioned" flag, optionally expanded by the
sinusoidal positional encoding gamma(x). The unconditional input is the zero
vector *after* all of that (the released training loop zeroes the encoded
vector when it drops the quality condition), which is why ``encode`` and
``unconditional`` are separate functions.

Target syntax (the ``target`` item parameter), one term for all metrics or one
term per metric joined with ``/`` in the adapter's metric order:

* ``p99``, ``p2.5``  percentile of the training set (interpolated between tabulated quantiles)
* ``z=1.5``          a z-value directly
* ``0.62``           a raw score of the metric (z-scored with the stats)

e.g. ``target=p99`` or, for ``topiq_nr+laion_aes``, ``target=p99/p50``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from iqabench.contracts.errors import UserInputError

VENDORED_STATS = "cc3m_metric_stats.csv"
_TERM_RE = re.compile(r"^(?:p(?P<pct>\d+(?:\.\d+)?)|z=(?P<z>[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)|"
                      r"(?P<raw>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?))$", re.IGNORECASE)


class TargetError(UserInputError):
    """A quality target that cannot be parsed or resolved; the message is one sentence."""


@dataclass(frozen=True)
class MetricStats:
    """Training-set statistics of one metric: mean/std for z-scoring, quantiles for ``pNN`` targets.

    ``quantiles`` maps a percentile in [0, 100] to the score at it; ``min``/``max``
    are stored as the 0th/100th percentiles so that every percentile resolves.
    """

    name: str
    mean: float
    std: float
    quantiles: Mapping[float, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.std) and self.std > 0):
            raise TargetError(f"metric {self.name!r} has std {self.std!r}; z-scoring needs a positive std")

    def z(self, raw: float) -> float:
        return (float(raw) - self.mean) / self.std

    def raw(self, z: float) -> float:
        return self.mean + float(z) * self.std

    def percentile(self, pct: float) -> float:
        """Raw score at percentile ``pct``, linear between the tabulated quantiles (why: the CSV holds 11)."""
        if not 0.0 <= pct <= 100.0:
            raise TargetError(f"percentile p{pct:g} is outside 0..100")
        known = sorted(self.quantiles.items())
        if not known:
            raise TargetError(f"metric {self.name!r} has no percentile table; give a z-value or raw target")
        if pct < known[0][0] or pct > known[-1][0]:
            raise TargetError(
                f"percentile p{pct:g} of {self.name!r} is outside the tabulated range "
                f"p{known[0][0]:g}..p{known[-1][0]:g}"
            )
        for (p0, v0), (p1, v1) in zip(known[:-1], known[1:], strict=True):
            if p0 <= pct <= p1:
                return v0 if p1 == p0 else v0 + (v1 - v0) * (pct - p0) / (p1 - p0)
        return known[-1][1]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "quantiles": {f"{k:g}": v for k, v in self.quantiles.items()}}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> MetricStats:
        quantiles = {float(k): float(v) for k, v in dict(data.get("quantiles", {})).items()}
        return cls(name, float(data["mean"]), float(data["std"]), quantiles)


def read_stats_csv(text: str) -> dict[str, MetricStats]:
    """Parse the released stats layout: ``metric, min_val, max_val, mean_val, std_val, quantile_<p>...``."""
    reader = csv.DictReader(io.StringIO(text))
    needed = {"metric", "mean_val", "std_val"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise TargetError(f"stats file lacks the columns {sorted(needed)} (found {reader.fieldnames})")
    stats: dict[str, MetricStats] = {}
    for row in reader:
        quantiles: dict[float, float] = {}
        for key, value in row.items():
            if key and key.startswith("quantile_") and value not in (None, ""):
                quantiles[float(key[len("quantile_"):])] = float(value)
        if row.get("min_val") not in (None, ""):
            quantiles[0.0] = float(row["min_val"])
        if row.get("max_val") not in (None, ""):
            quantiles[100.0] = float(row["max_val"])
        stats[row["metric"]] = MetricStats(row["metric"], float(row["mean_val"]), float(row["std_val"]), quantiles)
    return stats


def write_stats_csv(stats: Mapping[str, MetricStats]) -> str:
    """Inverse of :func:`read_stats_csv`, so ``score-dataset`` output feeds training and generation alike."""
    pcts = sorted({p for s in stats.values() for p in s.quantiles if 0.0 < p < 100.0})
    header = ["metric", "min_val", "max_val", "mean_val", "std_val"] + [f"quantile_{p:g}" for p in pcts]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for name, s in stats.items():
        q = s.quantiles
        writer.writerow([name, q.get(0.0, ""), q.get(100.0, ""), repr(s.mean), repr(s.std)]
                        + [repr(q[p]) if p in q else "" for p in pcts])
    return out.getvalue()


def load_stats(path: str | Path | None = None) -> dict[str, MetricStats]:
    """Metric statistics from ``path`` (a stats CSV) or, by default, the vendored CC3M table."""
    if path is None:
        text = resources.files("iqabench").joinpath("data", VENDORED_STATS).read_text(encoding="utf-8")
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"stats file {str(p)!r} does not exist (write one with `iqabench score-dataset`)")
        text = p.read_text(encoding="utf-8")
    return read_stats_csv(text)


def select_stats(metrics: Sequence[str], table: Mapping[str, MetricStats]) -> list[MetricStats]:
    missing = [m for m in metrics if m not in table]
    if missing:
        raise TargetError(
            f"no training-set statistics for {missing}; known: {sorted(table)} "
            "(pass stats=<file> written by `iqabench score-dataset`)"
        )
    return [table[m] for m in metrics]


def _resolve_term(term: Any, stats: MetricStats) -> float:
    if isinstance(term, bool):
        raise TargetError(f"target {term!r} is not a percentile, z-value or score")
    if isinstance(term, (int, float)):
        text = repr(float(term))
    else:
        text = str(term).strip()
    match = _TERM_RE.match(text)
    if not match:
        raise TargetError(
            f"cannot read quality target {text!r}: use a percentile like 'p99', a z-value like 'z=1.5' "
            "or a raw score like '0.62'"
        )
    if match.group("pct") is not None:
        return stats.z(stats.percentile(float(match.group("pct"))))
    if match.group("z") is not None:
        return float(match.group("z"))
    return stats.z(float(match.group("raw")))


def resolve_target(target: Any, stats: Sequence[MetricStats]) -> list[float]:
    """Turn one ``target`` parameter into the z-values of each metric, in the adapter's metric order."""
    if isinstance(target, (list, tuple)):
        terms = list(target)
    elif isinstance(target, str) and "/" in target:
        terms = target.split("/")
    else:
        terms = [target] * len(stats)
    if len(terms) != len(stats):
        names = "/".join(s.name for s in stats)
        raise TargetError(f"target {target!r} has {len(terms)} terms but the adapter takes {len(stats)} ({names})")
    return [_resolve_term(t, s) for t, s in zip(terms, stats, strict=True)]


def positional_encoding(x: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """gamma(x) = (x, sin(2^k pi x)..., cos(2^k pi x)...) for k < L, laid out as the released code does.

    Layout for inputs x_1..x_n: all raw inputs, then all sines (L per input,
    input-major: sin(2^0 pi x_1) .. sin(2^(L-1) pi x_1), sin(2^0 pi x_2) ...),
    then all cosines in the same order. A different layout would load released
    weights without error and silently scramble the conditioning.
    """
    if x.ndim != 2:
        raise ValueError(f"positional encoding expects [batch, n_inputs], got shape {tuple(x.shape)}")
    if num_frequencies <= 0:
        return x
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, device=x.device, dtype=x.dtype)
    args = x[:, :, None] * freqs[None, None, :]
    sines = torch.sin(args).reshape(x.shape[0], -1)
    cosines = torch.cos(args).reshape(x.shape[0], -1)
    return torch.cat([x, sines, cosines], dim=-1)


@dataclass(frozen=True)
class QualityEncoding:
    """How z-values become the projection's input: optional flag, optional positional encoding."""

    n_scores: int
    use_flag: bool = False
    pos_frequencies: int = 0

    @property
    def input_dim(self) -> int:
        width = self.n_scores + int(self.use_flag)
        return width * (1 + 2 * self.pos_frequencies)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """[B, n_scores] z-values -> [B, input_dim] projection input."""
        if z.ndim != 2 or z.shape[1] != self.n_scores:
            raise TargetError(f"expected z-values of shape [batch, {self.n_scores}], got {tuple(z.shape)}")
        if self.use_flag:
            z = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        return positional_encoding(z, self.pos_frequencies)

    def unconditional(self, batch: int, *, device=None, dtype=None) -> torch.Tensor:
        """The dropped-condition input: zeros of the *encoded* width (not encode(0), whose cosines are 1)."""
        return torch.zeros(batch, self.input_dim, device=device, dtype=dtype)

    @staticmethod
    def infer(input_dim: int, n_scores: int) -> QualityEncoding:
        """Recover flag and L from a checkpoint's input width, given how many scores it takes.

        ``input_dim = (n + flag) * (1 + 2L)``; n and n + 1 have different parity
        and (1 + 2L) is odd, so at most one (flag, L) fits.
        """
        for flag in (False, True):
            width = n_scores + int(flag)
            if input_dim % width == 0 and (input_dim // width - 1) % 2 == 0:
                return QualityEncoding(n_scores, flag, (input_dim // width - 1) // 2)
        raise TargetError(
            f"a projection input of width {input_dim} does not fit {n_scores} score(s) "
            "with or without the flag and positional encoding; check the metric list"
        )
