"""Toolkit overhead: `iqabench run` on N images vs a plain diffusers loop plus plain pyiqa calls.

Both sides run in this process on the same prompts, seeds, batch size and
metrics, after one warm-up run of each (imports, first-call costs); each timed
side then builds its pipeline and metrics itself, as a script would. Prints two
tables:

1. end to end: toolkit (plan, generate + PNG cache, decode + score + SQLite,
   analyse, HTML report) vs the plain loop (pipeline calls + batched pyiqa on
   the in-memory tensors), and the overhead ratio;
2. scoring alone: the toolkit's scoring stage (each image decoded once for all
   metrics, batched) vs the way pyiqa is usually called, one file per call per
   metric (``metric("img.png")``).

Usage: python bench/overhead.py [--images 32] [--batch-size 4] [--generator tiny-sd] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def plain_loop(generator_spec: str, prompts: list[str], seeds: list[int], metrics: list[str], batch_size: int,
               runtime) -> float:
    """What a researcher would write by hand: batched pipeline calls, then batched pyiqa on the tensors."""
    import pyiqa

    from iqabench.generators import build_generator

    start = time.perf_counter()
    generator = build_generator(generator_spec, runtime)
    pipe = generator.load_pipeline().to(runtime.device)  # the same construction a user script would do
    pipe.set_progress_bar_config(disable=True)
    opts = generator.options
    models = {m: pyiqa.create_metric(m, device=runtime.device) for m in metrics}
    pairs = [(p, s) for p in prompts for s in seeds]
    tensors = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        out = pipe(prompt=[p for p, _ in chunk], generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk],
                   num_inference_steps=opts["steps"], guidance_scale=opts["guidance_scale"], height=opts["height"],
                   width=opts["width"], output_type="np")
        tensors.append(torch.from_numpy(out.images).permute(0, 3, 1, 2).float())
    images = torch.cat(tensors)
    for model in models.values():
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size])
    return time.perf_counter() - start


def toolkit_run(generator_spec: str, prompts: str, limit: int, seeds: list[int], metrics: list[str], batch_size: int,
                device: str, root: Path) -> dict[str, float]:
    from iqabench.reports import render_report, save_result
    from iqabench.runner import Runner
    from iqabench.specs import RunSpec

    spec = RunSpec("scores", [generator_spec], metrics=metrics, prompts=prompts, limit=limit, seeds=seeds,
                   batch_size=batch_size, device=device)
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
    result = runner.analyze()
    save_result(runner.store, runner.run_id, result)
    times["analyse"] = time.perf_counter() - t
    t = time.perf_counter()
    render_report(runner.store, [runner.run_id])
    times["report"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    return times


def per_file_pyiqa(paths: list[Path], metrics: list[str], device: str) -> float:
    import pyiqa

    models = {m: pyiqa.create_metric(m, device=device) for m in metrics}
    start = time.perf_counter()
    for model in models.values():
        for path in paths:
            model(str(path))
    return time.perf_counter() - start


def toolkit_scoring(root: Path, generator_spec: str, prompts: str, limit: int, seeds: list[int], metrics: list[str],
                    batch_size: int, device: str) -> tuple[float, list[Path]]:
    from iqabench.runner import Runner
    from iqabench.specs import RunSpec

    spec = RunSpec("scores", [generator_spec], metrics=metrics, prompts=prompts, limit=limit, seeds=seeds,
                   batch_size=batch_size, device=device)
    runner = Runner(spec, root)
    runner.generate()
    # Drop cached scores so the stage really runs.
    runner.store._connection().execute("DELETE FROM scores")
    start = time.perf_counter()
    runner.score()
    elapsed = time.perf_counter() - start
    return elapsed, [runner.store.image_path(k) for k in sorted(set(runner.image_keys))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--generator", default="tiny-sd")
    parser.add_argument("--metrics", default="piqe,entropy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from iqabench.prompts import load_prompts
    from iqabench.runtime import Runtime

    metrics = args.metrics.split(",")
    seeds = [0, 1]
    limit = max(1, args.images // len(seeds))
    prompt_texts = [p.text for p in load_prompts("parti", limit=limit)]
    runtime = Runtime(args.device, "auto", args.batch_size)

    with tempfile.TemporaryDirectory() as tmp:
        toolkit_run(args.generator, "parti", limit, seeds, metrics, args.batch_size, args.device, Path(tmp) / "warm")
        plain_loop(args.generator, prompt_texts, seeds, metrics, args.batch_size, runtime)
        plain, ours = [], []
        for r in range(args.repeats):  # interleaved so drift hits both sides alike
            plain.append(plain_loop(args.generator, prompt_texts, seeds, metrics, args.batch_size, runtime))
            ours.append(toolkit_run(args.generator, "parti", limit, seeds, metrics, args.batch_size, args.device,
                                    Path(tmp) / f"run{r}"))
        score_times, file_times = [], []
        for r in range(args.repeats):
            elapsed, paths = toolkit_scoring(Path(tmp) / f"run{r}", args.generator, "parti", limit, seeds, metrics,
                                             args.batch_size, args.device)
            score_times.append(elapsed)
            file_times.append(per_file_pyiqa(paths, metrics, args.device))

    n = limit * len(seeds)
    med = statistics.median
    print(f"\n{n} images, {args.generator}, batch {args.batch_size}, metrics {args.metrics}, device {args.device}, "
          f"median of {args.repeats}\n")
    print("| stage | toolkit s |")
    print("| --- | --- |")
    for stage in ours[0]:
        print(f"| {stage} | {med(t[stage] for t in ours):.3f} |")
    total, base = med(t["total"] for t in ours), med(plain)
    print("\n| path | seconds | images/s |\n| --- | --- | --- |")
    print(f"| plain diffusers + pyiqa | {base:.3f} | {n / base:.2f} |")
    print(f"| iqabench run (all stages) | {total:.3f} | {n / total:.2f} |")
    print(f"\ntoolkit overhead: {100 * (total / base - 1):+.1f}% (target < 5%)")
    s_ours, s_file = med(score_times), med(file_times)
    print(f"\n| scoring {n} images x {len(metrics)} metrics | seconds |\n| --- | --- |")
    print(f"| pyiqa per file, per metric | {s_file:.3f} |")
    print(f"| iqabench batched, decoded once | {s_ours:.3f} |")
    print(f"\nbatched scoring speed-up: {s_file / s_ours:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
