"""The PNG writer beside a busy pipeline: per-image commits vs one commit per batch vs a writer process.

The generation loop hands each batch's images to a background writer (PNG encoding, an fsync'd atomic file, the
SQLite records). On the CPU the writer competes with the pipeline for cores: issue 29 measured the pipeline
calls 9% slower with it. This script runs a stand-in pipeline (convolutions on every core, timed per call) while
each writer strategy stores the same images, and prints the pipeline's slowdown and the writer's own time:

* ``none``: the pipeline alone (the reference);
* ``thread, per image``: the old writer: one file and two transactions (record, scores) per image;
* ``thread, per batch``: the writer iqabench uses: every file of a batch, then one transaction;
* ``process, per batch``: PNG encoding and the files in a worker process, one transaction in the parent.

Usage: python perf/png_writer.py [--images 64] [--batch 8] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def images(n: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return [Image.fromarray(np.roll(base, i, axis=0)) for i in range(n)]  # distinct, noise-like (hard to compress)


def pipeline_call(x: torch.Tensor, conv: torch.nn.Module) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(4):
            x = conv(x)
    return time.perf_counter() - start


def encode_and_write(store_root: str, key: str, array: np.ndarray) -> tuple[str, bytes, tuple[int, int]]:
    """Worker process: encode one PNG and write it atomically; the parent records it."""
    from iqabench.store.atomic_io import atomic_write_bytes

    image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    path = Path(store_root) / "cache" / "images" / key[:2] / f"{key}.png"  # the store's layout (Store.image_path)
    atomic_write_bytes(path, data)
    return key, data, image.size


def run(strategy: str, pics: list[Image.Image], batch: int, root: Path) -> tuple[float, float]:
    """(pipeline seconds, writer seconds) for one strategy."""
    from iqabench.store.store import Store

    store = Store(root)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, 96, 96)
    keys = [f"{i:064x}" for i in range(len(pics))]
    rows = [[(k, "m", "fp", 1.0, None)] for k in keys]
    pool: Executor | None = None
    if strategy.startswith("thread"):
        pool = ThreadPoolExecutor(max_workers=1)
    elif strategy.startswith("process"):
        pool = ProcessPoolExecutor(max_workers=1)
    pending, writer_s = [], [0.0]

    def per_image(chunk):
        start = time.perf_counter()
        for k, pic, r in chunk:
            store.put_image(k, pic)
            store.put_scores(r)
        writer_s[0] += time.perf_counter() - start

    def per_batch(chunk):
        start = time.perf_counter()
        store.put_images(chunk)
        writer_s[0] += time.perf_counter() - start

    pipeline_s = 0.0
    for start in range(0, len(pics), batch):
        pipeline_s += pipeline_call(x, conv)
        chunk = [(keys[i], pics[i], rows[i]) for i in range(start, min(start + batch, len(pics)))]
        if strategy == "thread, per image":
            pending.append(pool.submit(per_image, chunk))
        elif strategy == "thread, per batch":
            pending.append(pool.submit(per_batch, chunk))
        elif strategy == "process, per batch":
            pending.append((chunk, [pool.submit(encode_and_write, str(root), k, np.asarray(p)) for k, p, _ in chunk]))
    t = time.perf_counter()
    for item in pending:
        if isinstance(item, tuple):  # process: record in the parent, one transaction per batch
            chunk, futures = item
            written = [f.result() for f in futures]
            with store._transaction() as db:
                for key, data, size in written:
                    store.record_image(db, key, data, size)
                db.executemany("INSERT OR REPLACE INTO scores (image_key, metric, metric_fp, value, error) "
                               "VALUES (?,?,?,?,?)", [r for _, _, rs in chunk for r in rs])
        else:
            item.result()
    drain = time.perf_counter() - t
    if pool is not None:
        pool.shutdown()
    store.close()
    return pipeline_s, writer_s[0] + drain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pics = images(args.images, args.size)
    strategies = ["none", "thread, per image", "thread, per batch", "process, per batch"]
    results: dict[str, list[tuple[float, float]]] = {s: [] for s in strategies}
    for _ in range(args.repeats):  # interleaved, so drift hits every strategy alike
        for strategy in strategies:
            with tempfile.TemporaryDirectory() as tmp:
                results[strategy].append(run(strategy, pics, args.batch, Path(tmp)))
    base = statistics.median(p for p, _ in results["none"])
    print(f"\n{args.images} images of {args.size} px, batches of {args.batch}, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats}\n")
    print("| writer | pipeline s | pipeline slowdown | writer s (incl. final wait) |\n| --- | --- | --- | --- |")
    for strategy in strategies:
        p = statistics.median(x for x, _ in results[strategy])
        w = statistics.median(y for _, y in results[strategy])
        print(f"| {strategy} | {p:.3f} | {100 * (p / base - 1):+.1f}% | {w:.3f} |")


if __name__ == "__main__":
    main()
