"""The report stage's fixed cost at full image size, with no generator: save a Result, render report.html.

``perf/overhead_stages.py`` times the report inside a whole run; on the CPU its images
are the tiny test models' 64 px ones, and a GPU run is needed for full-size
images. Here the images are ``--images`` random smooth PNGs of ``--size`` px put
in a Store (as a run would have cached them), and the Result is what a relgain
run hands over: a headline table with CIs, a per-item table, one heatmap with
CIs and a grid of every image. Printed: save and render, the first time in the
process (imports, template compilation) and then the median of ``--repeats``,
with the thumbnails made one by one and on the thread pool (side by side, so
the ratio is from one run); both pages must be identical, which is checked.

Usage: python perf/report_cost.py [--images 16] [--size 1024] [--repeats 3] [--workers N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, print_table  # noqa: E402
from scoring import _random_pngs  # noqa: E402


def _result(keys: list[str]):
    import pandas as pd

    from iqabench.analysis.plotting import heatmap_figure
    from iqabench.contracts.results import ImageRef, Result

    rng = np.random.default_rng(0)
    metrics = ["piqe", "entropy", "topiq_nr"]
    rows = []
    for m in metrics:
        value = float(rng.normal(2, 3))
        rows.append({"generator": "sdxl[guided]", "metric": m, "relgain": value, "relgain_ci_low": value - 2.5,
                     "relgain_ci_high": value + 2.5, "n": len(keys) // 2})
    table = pd.DataFrame(rows)
    grid = table.pivot(index="generator", columns="metric", values="relgain")
    low = table.pivot(index="generator", columns="metric", values="relgain_ci_low")
    high = table.pivot(index="generator", columns="metric", values="relgain_ci_high")
    per_item = pd.DataFrame({"image_key": keys, "piqe": rng.normal(40, 5, len(keys))})
    half = len(keys) // 2
    refs = [ImageRef(key, f"prompt {i % half}", {"piqe": 40.0}, "base" if i < half else "sdxl[guided]")
            for i, key in enumerate(keys)]
    return Result("relgain", tables={"relgain": table, "relgain_per_item": per_item},
                  figures={"relgain_matrix": heatmap_figure(grid, "RelGain, %", low=low, high=high)},
                  grids={"baseline_vs_generator": refs}, summary={"n_images": len(keys)})


def _report(store, run_id: str, keys: list[str], workers: int) -> tuple[float, float, str]:
    from iqabench.reports import render, render_report, save_result

    render.THUMBNAIL_WORKERS = workers
    result = _result(keys)
    start = time.perf_counter()
    save_result(store, run_id, result)
    saved = time.perf_counter()
    path = render_report(store, [run_id])
    return saved - start, time.perf_counter() - saved, path.read_text("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="thumbnail threads (default: the decoder's)")
    args = parser.parse_args()

    from iqabench.execution.image_tensors import default_workers
    from iqabench.store.store import Store

    workers = args.workers or default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        keys = _random_pngs(store, args.images, args.size)
        first_save, first_render, _ = _report(store, "first", keys, workers)
        times: dict[int, list[tuple[float, float]]] = {1: [], workers: []}
        pages: dict[int, str] = {}
        for _ in range(args.repeats):  # interleaved so drift hits both alike
            for n in dict.fromkeys((1, workers)):
                save, render, html = _report(store, "run", keys, n)
                times[n].append((save, render))
                pages[n] = html
    if pages[1] != pages[workers]:
        raise SystemExit("the page made with the thumbnail pool differs from the serial one")
    med = statistics.median
    rows = [["first in the process", f"{workers}", first_save, first_render, first_save + first_render]]
    for n, pairs in times.items():
        save, render = med(s for s, _ in pairs), med(r for _, r in pairs)
        rows.append([f"median of {args.repeats}", str(n), save, render, save + render])
    print_table(f"report stage, {args.images} images of {args.size} px, one heatmap, two tables (seconds)",
                ["call", "thumbnail threads", "save", "render", "report"], rows)
    serial, pooled = med(r for _, r in times[1]), med(r for _, r in times[workers])
    print(f"\nthumbnail pool: render {serial / pooled:.2f}x faster with {workers} threads (pages identical)")
    emit("report_cost", images=args.images, size=args.size, workers=workers, first_save_s=first_save,
         first_render_s=first_render, save_s=med(s for s, _ in times[workers]), render_serial_s=serial,
         render_pool_s=pooled, render_speedup=serial / pooled)


if __name__ == "__main__":
    main()
