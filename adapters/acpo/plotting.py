"""``losses.csv`` and the loss curve of an ACPO run (each term on its own axis, log scale where positive)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

TERMS = ("mse", "anchor", "quality", "total")


def write_loss_curve(history: Sequence[Mapping[str, float]], out: str | Path) -> list[Path]:
    """Write ``losses.csv`` and ``loss_curve.png`` / ``.svg`` into ``out``; returns the figure paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["step", *TERMS]
    lines = [",".join(columns)] + [",".join(f"{row.get(c, float('nan'))}" for c in columns) for row in history]
    (out / "losses.csv").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, len(TERMS), figsize=(3.2 * len(TERMS), 2.8))
    steps = [row["step"] for row in history]
    for ax, term in zip(axes, TERMS, strict=True):
        values = [row[term] for row in history]
        ax.plot(steps, values, lw=1)
        ax.set_title(term)
        ax.set_xlabel("step")
        if values and min(values) > 0 and math.isfinite(max(values)):
            ax.set_yscale("log")
    fig.tight_layout()
    paths = [out / "loss_curve.png", out / "loss_curve.svg"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths
