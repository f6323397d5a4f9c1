"""Helpers shared by the perf scripts: device name, synchronisation, counted FLOPs, matmul peak, tables.

MFU here is *model FLOPs utilisation by counted FLOPs*: the FLOPs that
``torch.utils.flop_counter.FlopCounterMode`` counts for one pipeline call
(matmuls and convolutions; attention through SDPA included), times images per
second, divided by a peak rate. The peak is either given (``--peak-tflops``,
e.g. a datasheet's dense bf16 number) or measured here with a large matmul in the
run's dtype, which is what the issue's "share of the card's measured bf16
matmul rate" means.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def sync(device: str | torch.device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str | torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def counted_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call as FlopCounterMode counts them (runs ``fn`` once)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_tflops(device: str | torch.device, dtype: torch.dtype, size: int | None = None,
                       repeats: int = 10) -> float:
    """Measured dense matmul rate in TFLOP/s (the denominator of MFU when no ``--peak-tflops`` is given)."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    seconds, _ = timed(lambda: [a @ b for _ in range(repeats)], device)
    return 2 * size**3 * repeats / seconds / 1e12


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A markdown table under a title line; floats to 4 significant digits (strings are printed as they are)."""
    print_table_header(title, header)
    for row in rows:
        print_table_row(row)


def print_table_header(title: str, header: Sequence[str]) -> None:
    """The title and header of a table whose rows are printed as they are measured (:func:`print_table_row`)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")


def print_table_row(row: Sequence[Any]) -> None:
    print("| " + " | ".join(_fmt(v) for v in row) + " |")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def emit(bench: str, **fields: Any) -> None:
    """One machine-readable line (the GPU kit collects lines starting with {"bench")."""
    print(json.dumps({"bench": bench, **fields}, default=str), flush=True)
