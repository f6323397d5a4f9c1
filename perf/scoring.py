"""Scoring throughput: in-memory scoring of images made in the run vs the PNG decode path, and parallel vs
serial decoding of cached images.

Table 1 (images made in this run): the same plan run twice, each into a fresh
Store: ``score_in_memory=True`` scores the pipeline's uint8 tensors right after
each generation call (the runner's default), ``False`` generates first and then
decodes every PNG back for the scoring stage (the old path). Scoring time is
the runner's own stage clock (metric construction is timed apart); both runs
must give identical scores, which the table checks.

Table 2 (cache hits): ``--decode-images`` random smooth PNGs of
``--decode-size`` px in a Store, decoded by the runner's parallel decoder
(thread pool, prefetch) vs one after another, alone and inside the scoring
stage with a cheap metric, so decoding is what is measured.

Usage: python perf/scoring.py [--generator tiny-sd] [--images 64] [--batch-size 8] [--metrics piqe]
                              [--decode-images 64] [--decode-size 512] [--device cpu] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, emit, print_table, sync, timed  # noqa: E402


def _spec(generator: str, images: int, batch_size: int, metrics: list[str], device: str, dtype: str):
    from iqabench.contracts.specs import RunSpec

    seeds = [0, 1]
    return RunSpec("scores", [generator], metrics=metrics, prompts="parti", limit=max(1, images // len(seeds)),
                   seeds=seeds, batch_size=batch_size, device=device, dtype=dtype)


def _scores(runner) -> dict[tuple[str, str], float | None]:
    out = {}
    for metric, fp in runner.metric_fps.items():
        for key, value in runner.store.get_scores(sorted(set(runner.image_keys)), metric, fp).items():
            out[(key, metric)] = value
    return out


def in_memory_vs_decode(args, root: Path) -> list[tuple]:
    from iqabench.engine.runner import Runner

    spec = _spec(args.generator, args.images, args.batch_size, args.metrics, args.device, args.dtype)
    Runner(spec, root / "warm", score_in_memory=True).execute()  # imports, first calls, metric construction
    rows, scores = [], {}
    for label, in_memory in (("in memory, same pass", True), ("PNG decode, separate stage", False)):
        runner = Runner(spec, root / label.split()[0], score_in_memory=in_memory)
        runner.generate()
        runner.score()
        stages = runner.clock.stages
        build_s = stages["metric-build"].wall if "metric-build" in stages else 0.0
        # the metric is built inside whichever stage scores first: its construction is reported apart
        score_s = (stages["score-in-memory"].wall if in_memory else stages["score"].wall) - build_s
        n = len(set(runner.image_keys))
        scores[in_memory] = _scores(runner)
        rows.append((label, n, stages["generate"].wall, score_s, n / score_s, build_s))
        emit("scoring_in_memory", path=label, images=n, generate_s=stages["generate"].wall, score_s=score_s,
             images_per_s=n / score_s, device=device_name(args.device))
    same = scores[True] == scores[False] and all(v is not None for v in scores[True].values())
    rows.append(("identical scores", "yes" if same else "NO", "", "", f"{rows[1][3] / rows[0][3]:.2f}x", ""))
    return rows


def _random_pngs(store, n: int, size: int) -> list[str]:
    from PIL import Image

    from iqabench.store.store import content_key

    rng = np.random.default_rng(0)
    keys = []
    for i in range(n):
        coarse = rng.random((size // 16, size // 16, 3))
        smooth = np.kron(coarse, np.ones((16, 16, 1)))
        grain = rng.normal(0, 0.04, (size, size, 3))
        array = (np.clip(smooth + grain, 0, 1) * 255).round().astype(np.uint8)
        key = content_key("perf-decode", i, size)
        store.put_image(key, Image.fromarray(array))
        keys.append(key)
    return keys


def _register_mean_metric() -> None:
    """``perf_mean``: a metric that costs next to nothing, so what is timed is getting the pixels to it."""
    from iqabench.metrics import register_metric

    class _Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    register_metric("perf_mean", lower_better=False, overwrite=True)(lambda device: _Mean())


def parallel_vs_serial(args, root: Path) -> list[tuple]:
    from iqabench.engine.scoring import TensorScorer
    from iqabench.execution.image_tensors import ParallelDecoder, decode_serially, default_workers
    from iqabench.execution.runtime import Runtime
    from iqabench.store.store import Store

    store = Store(root / "decode")
    keys = _random_pngs(store, args.decode_images, args.decode_size)
    runtime = Runtime(args.device, args.dtype, args.batch_size)
    device = runtime.torch_device
    batches = [keys[i : i + args.batch_size] for i in range(0, len(keys), args.batch_size)]
    workers = default_workers()
    rows = []
    for label, n_workers in (("serial (1 image at a time)", 1), (f"parallel ({workers} threads)", workers)):
        if n_workers == 1:
            seconds, _ = timed(lambda: [torch.stack(decode_serially(store.load_image, b)).to(device) for b in batches],
                               device)
        else:
            decoder = ParallelDecoder(store.load_image, device, workers=n_workers)
            seconds, _ = timed(lambda d=decoder: list(d.batches(batches)), device)
        needed = {k: ["perf_mean"] for k in keys}
        scorer = TensorScorer(store, runtime, {"perf_mean": "perf"})
        scorer.metric("perf_mean")
        sync(device)
        run = functools.partial(scorer.score_cached, keys, needed, args.batch_size, workers=n_workers)
        score_s, _ = timed(run, device)
        rows.append((label, len(keys), seconds, len(keys) / seconds, score_s, len(keys) / score_s))
        emit("decode", path=label, images=len(keys), size=args.decode_size, decode_s=seconds, score_stage_s=score_s,
             device=device_name(args.device))
    rows.append(("speed-up", "", "", f"{rows[1][3] / rows[0][3]:.2f}x", "", f"{rows[1][5] / rows[0][5]:.2f}x"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="tiny-sd")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--metrics", default="piqe")
    parser.add_argument("--decode-images", type=int, default=64)
    parser.add_argument("--decode-size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--only", choices=("in-memory", "decode"), default=None)
    parser.add_argument("--plugin", action="append", default=[], help="plugin file (e.g. perf/gpu/gpu_gens.py)")
    args = parser.parse_args()
    from iqabench.contracts.registry import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    _register_mean_metric()
    args.metrics = args.metrics.split(",")
    print(f"device: {device_name(args.device)}, dtype {args.dtype}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "in-memory"):
            print_table(f"scoring images made in the run ({args.generator}, metrics {','.join(args.metrics)})",
                        ["path", "images", "generate stage s", "scoring s (excl. metric build)", "images/s scored",
                         "metric build s"],
                        in_memory_vs_decode(args, Path(tmp)))
        if args.only in (None, "decode"):
            print_table(f"cache hits: {args.decode_images} PNGs of {args.decode_size} px",
                        ["decoder", "images", "decode s", "images/s", "scoring stage s (cheap metric)", "images/s"],
                        parallel_vs_serial(args, Path(tmp)))


if __name__ == "__main__":
    main()
