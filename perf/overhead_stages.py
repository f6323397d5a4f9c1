"""Toolkit overhead: `iqabench run` on N images vs a plain diffusers loop plus plain pyiqa calls.

Both sides run in this process on the same prompts, seeds, batch size and
metrics, after one warm-up batch of each (imports, first-call costs); each timed
side then builds its pipeline and metrics itself, as a script would. Prints two
tables:

1. end to end: toolkit (plan, generate + PNG cache, decode + score + SQLite,
   analyse, report) vs the plain loop (pipeline calls + batched pyiqa on
   the in-memory tensors), and the overhead ratio; then the report stage alone
   (saving the Result + rendering report.html: the report's fixed cost), also
   as it costs the first time in a process;
2. scoring alone: the toolkit's scoring stage (each image decoded once for all
   metrics, batched) vs the way pyiqa is usually called, one file per call per
   metric (``metric("img.png")``). Like for like: both sides build their metrics
   before the clock starts. The toolkit is timed at the batch size the run
   itself scores at on the device (``--batch-size``, through the run's batch
   policy) and at the sizes worth trying there (1, 4, 16 on a CPU; 1, 16, 64 on
   a GPU), in a rotating order after one unmeasured pass; the headline is the
   run's own size, the fastest is named beside it, and a ratio under 1 is
   printed as "slower", never as a speed-up.

The toolkit's runner also reports its own stage clock (wall time, device-busy
time and idle time per stage: generation, scoring in memory, the PNG writer,
the scoring stage, analysis, the report), printed as a table for the last repeat. "Idle" is the time outside
device calls (see iqabench/execution/stage_timing.py); gaps inside a pipeline call count as busy.

Usage: python perf/overhead_stages.py [--images 32] [--batch-size 4] [--generator tiny-sd] [--device cpu] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def plain_loop(generator_spec: str, prompts: list[str], seeds: list[int], metrics: list[str], batch_size: int,
               runtime) -> dict[str, float]:
    """What a researcher would write by hand: batched pipeline calls, then batched pyiqa on the tensors."""
    import pyiqa

    from iqabench.contracts.generators import build_generator

    times: dict[str, float] = {}
    start = time.perf_counter()
    generator = build_generator(generator_spec, runtime)
    pipe = generator.load_pipeline().to(runtime.device)  # as a user script would build it
    if pipe.dtype != runtime.torch_dtype:
        pipe = pipe.to(dtype=runtime.torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    opts = generator.options
    pairs = [(p, s) for p in prompts for s in seeds]
    tensors = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        out = pipe(prompt=[p for p, _ in chunk], generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk],
                   num_inference_steps=opts["steps"], guidance_scale=opts["guidance_scale"], height=opts["height"],
                   width=opts["width"], output_type="pt")
        tensors.append(out.images.float())
    images = torch.cat(tensors)
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    times["generate"] = time.perf_counter() - start
    t = time.perf_counter()
    models = {m: pyiqa.create_metric(m, device=runtime.device) for m in metrics}
    for model in models.values():
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size])
    times["score"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - start
    return times


def toolkit_run(generator_spec: str, prompts: str, limit: int, seeds: list[int], metrics: list[str], batch_size: int,
                device: str, root: Path, dtype: str = "auto", clock_out: list | None = None) -> dict[str, float]:
    from iqabench.contracts.specs import RunSpec
    from iqabench.engine.runner import Runner
    from iqabench.reports import render_report, save_result

    spec = RunSpec("scores", [generator_spec], metrics=metrics, prompts=prompts, limit=limit, seeds=seeds,
                   batch_size=batch_size, device=device, dtype=dtype)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    runner = Runner(spec, root)
    runner.summarize_plan()
    times["plan"] = time.perf_counter() - t0
    t = time.perf_counter()
    runner.generate()
    times["generate+write"] = time.perf_counter() - t
    t = time.perf_counter()
    runner.score()
    times["decode+score"] = time.perf_counter() - t
    t = time.perf_counter()
    with runner.clock.stage("analyse"):
        result = runner.analyze()
    times["analyse"] = time.perf_counter() - t
    # the report stage as iqabench.api.execute runs it: persist the Result (CSV/.tex/.md tables, SVG/PNG/PDF
    # figures, result.json), then render report.html (thumbnails, tables, inline SVG)
    t = time.perf_counter()
    with runner.clock.stage("report"):
        save_result(runner.store, runner.run_id, result)
        saved = time.perf_counter()
        render_report(runner.store, [runner.run_id])
    times["report"] = time.perf_counter() - t
    times["report: save"], times["report: render"] = saved - t, time.perf_counter() - saved
    times["total"] = time.perf_counter() - t0
    if clock_out is not None:
        clock_out[:] = runner.clock.table()
    return times


def per_file_pyiqa(paths: list[Path], metrics: list[str], device: str) -> float:
    import pyiqa

    models = {m: pyiqa.create_metric(m, device=device) for m in metrics}
    start = time.perf_counter()
    for model in models.values():
        for path in paths:
            model(str(path))
    return time.perf_counter() - start


def scoring_batch_sizes(runtime) -> tuple[int, ...]:
    """The scoring batch sizes worth trying on the runtime's device (small on a CPU, large on a GPU), with the
    size the toolkit itself scores at (the run's batch policy) among them."""
    candidates = (1, 4, 16) if runtime.torch_device.type == "cpu" else (1, 16, 64)
    return tuple(sorted({*candidates, runtime.batch.for_scoring()}))


def toolkit_scoring(root: Path, generator_spec: str, prompts: str, limit: int, seeds: list[int], metrics: list[str],
                    batch_size: int, device: str, dtype: str = "auto") -> tuple[float, list[Path]]:
    """Seconds of the toolkit's scoring stage over a finished run's cached images, at ``batch_size``, with the
    metrics built before the clock starts, as :func:`per_file_pyiqa` builds its own."""
    from iqabench.contracts.specs import RunSpec
    from iqabench.engine.runner import Runner

    spec = RunSpec("scores", [generator_spec], metrics=metrics, prompts=prompts, limit=limit, seeds=seeds,
                   batch_size=batch_size, device=device, dtype=dtype)
    runner = Runner(spec, root)
    runner.generate()  # every image is cached: nothing is generated (the batch size is not in the image key)
    # Drop cached scores so the stage really runs.
    runner.store._connection().execute("DELETE FROM scores")
    runner.build_metrics()  # not timed; image decoding (which the scoring stage prefetches) is
    start = time.perf_counter()
    runner.score()
    elapsed = time.perf_counter() - start
    return elapsed, [runner.store.image_path(k) for k in sorted(set(runner.image_keys))]


def speed_words(ratio: float) -> str:
    """A ratio of seconds (other / ours) in words that cannot be misread: "2.10x faster" or "2.17x slower"."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--generator", default="tiny-sd")
    parser.add_argument("--metrics", default="piqe,entropy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from iqabench.execution.runtime import Runtime
    from iqabench.io.prompts import load_prompts

    metrics = args.metrics.split(",")
    seeds = [0, 1]
    limit = max(1, args.images // len(seeds))
    prompt_texts = [p.text for p in load_prompts("parti", limit=limit)]
    runtime = Runtime(args.device, args.dtype, args.batch_size)

    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up (imports, first calls, kernel selection): one batch of each side is enough.
        warm = max(1, args.batch_size // len(seeds))
        first = toolkit_run(args.generator, "parti", warm, seeds, metrics, args.batch_size, args.device,
                            Path(tmp) / "warm", args.dtype)
        clock: list = []
        plain_loop(args.generator, prompt_texts[:warm], seeds, metrics, args.batch_size, runtime)
        plain, ours = [], []
        for r in range(args.repeats):  # interleaved so drift hits both sides alike
            plain.append(plain_loop(args.generator, prompt_texts, seeds, metrics, args.batch_size, runtime))
            ours.append(toolkit_run(args.generator, "parti", limit, seeds, metrics, args.batch_size, args.device,
                                    Path(tmp) / f"run{r}", args.dtype, clock))
        sizes = scoring_batch_sizes(runtime)
        toolkit_size = runtime.batch.for_scoring()  # what `iqabench run --batch-size N` scores at on this device
        score_times: dict[int, list[float]] = {size: [] for size in sizes}
        file_times = []
        # unmeasured: the decode-from-cache path's first use in this process (thread pool, first calls)
        toolkit_scoring(Path(tmp) / "run0", args.generator, "parti", limit, seeds, metrics, sizes[0], args.device,
                        args.dtype)
        for r in range(args.repeats):
            order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]  # no size always comes first
            for size in order:
                elapsed, paths = toolkit_scoring(Path(tmp) / f"run{r}", args.generator, "parti", limit, seeds,
                                                 metrics, size, args.device, args.dtype)
                score_times[size].append(elapsed)
            file_times.append(per_file_pyiqa(paths, metrics, args.device))

    n = limit * len(seeds)
    med = statistics.median
    print(f"\n{n} images, {args.generator}, batch {args.batch_size}, metrics {args.metrics}, device {args.device}, "
          f"median of {args.repeats}\n")
    plain_of = {"generate+write": "generate", "decode+score": "score", "total": "total"}
    print("| stage | toolkit s | plain diffusers + pyiqa s |")
    print("| --- | --- | --- |")
    for stage in (k for k in ours[0] if ": " not in k):  # the report's parts get their own table
        other = f"{med(t[plain_of[stage]] for t in plain):.3f}" if stage in plain_of else "-"
        print(f"| {stage} | {med(t[stage] for t in ours):.3f} | {other} |")
    total, base = med(t["total"] for t in ours), med(t["total"] for t in plain)
    print("\n| path | seconds | images/s |\n| --- | --- | --- |")
    print(f"| plain diffusers + pyiqa | {base:.3f} | {n / base:.2f} |")
    print(f"| iqabench run (all stages) | {total:.3f} | {n / total:.2f} |")
    print(f"\ntoolkit overhead: {100 * (total / base - 1):+.1f}% (target < 5% at 8 images, < 2% at 64)")
    report = {k: med(t[k] for t in ours) for k in ("report", "report: save", "report: render")}
    print("\n| report stage (the report's fixed cost) | seconds | share of the run |\n| --- | --- | --- |")
    for key, value in report.items():
        print(f"| {key} | {value:.3f} | {100 * value / total:.1f}% |")
    print(f"| report, first in the process (imports, template compile; {warm * len(seeds)} images) | "
          f"{first['report']:.3f} | - |")
    print("\n| runner stage (last repeat; generate includes score-in-memory) | wall s | device busy s | "
          "device idle s | calls |\n| --- | --- | --- | --- | --- |")
    for row in clock:
        print(f"| {row['stage']} | {row['wall_s']:.3f} | {row['device_busy_s']:.3f} | {row['device_idle_s']:.3f} | "
              f"{row['calls']} |")
    stage = {k: med(t[k] for t in ours) for k in ours[0]}
    print(json.dumps({"bench": "overhead", "images": n, "batch": args.batch_size, "dtype": runtime.dtype,
                      "overhead_pct": 100 * (total / base - 1), "toolkit_s": total, "plain_s": base,
                      "plain_generate_s": med(t["generate"] for t in plain),
                      "plain_score_s": med(t["score"] for t in plain),
                      **{f"toolkit_{k.replace(': ', '_')}_s": v for k, v in stage.items()},
                      "report_first_call_s": first["report"], "runner_clock": clock,
                      "device": torch.cuda.get_device_name() if runtime.device.startswith("cuda") else "cpu"}),
          flush=True)
    s_file = med(file_times)
    s_by_size = {size: med(times) for size, times in score_times.items()}
    fastest = min(s_by_size, key=s_by_size.get)
    device = runtime.torch_device.type
    print(f"\n| scoring {n} cached images x {len(metrics)} metrics on {device} (metrics built beforehand, median of "
          f"{args.repeats}) | seconds | iqabench vs pyiqa per file |\n| --- | --- | --- |")
    print(f"| pyiqa per file, per metric (`metric(path)`) | {s_file:.3f} | - |")
    for size, seconds in s_by_size.items():
        marks = [m for m, hit in (("the run's own size", size == toolkit_size), ("fastest here", size == fastest))
                 if hit]
        print(f"| iqabench, each PNG decoded once, batch {size}{' (' + ', '.join(marks) + ')' if marks else ''} | "
              f"{seconds:.3f} | {speed_words(s_file / seconds)} |")
    print(f"\nbatched scoring on {device} at the run's batch size {toolkit_size}: "
          f"{speed_words(s_file / s_by_size[toolkit_size])} than pyiqa per file (fastest measured: batch {fastest}, "
          f"{speed_words(s_file / s_by_size[fastest])})")
    print(json.dumps({"bench": "scoring_cache_read", "images": n, "metrics": args.metrics, "device": device,
                      "per_file_pyiqa_s": s_file, "toolkit_s_by_batch": s_by_size, "toolkit_batch": toolkit_size,
                      "fastest_batch": fastest, "toolkit_s": s_by_size[toolkit_size],
                      "speedup": s_file / s_by_size[toolkit_size]}), flush=True)


if __name__ == "__main__":
    main()
