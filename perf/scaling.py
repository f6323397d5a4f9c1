"""Items per second for 1 and N processes on the same plan (torchrun/gloo on CPU, accelerate on GPUs).

Each configuration runs `iqabench run scores` from scratch into its own store
(generation + scoring + report, process start-up included) and is checked for
correctness: every configuration must produce the same set of images with the
same pixels as the 1-process run.

Usage: python perf/scaling.py [--images 48] [--processes 1,2] [--generator tiny-sd] [--batch-size 4]
                              [--device auto] [--dtype auto]

``--device cuda`` with several processes gives each process its own GPU (``cuda:<local rank>``, as
``iqabench run`` does under a launcher).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run_once(n_processes: int, out: Path, limit: int, seeds: str, generator: str, batch_size: int,
             device: str = "auto", dtype: str = "auto") -> float:
    args = ["-m", "iqabench", "run", "scores", "--generator", generator, "--metrics", "piqe,entropy",
            "--prompts", "parti", "--limit", str(limit), "--seeds", seeds, "--batch-size", str(batch_size),
            "--device", device, "--dtype", dtype, "--out", str(out)]
    if n_processes == 1:
        cmd = [sys.executable, *args]
    elif torch.cuda.is_available():
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(n_processes), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n_processes), *args]
    # One intra-op thread per process in every configuration: CPU kernels give bit-different results with
    # different thread counts, and the correctness column compares pixels across configurations.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def image_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "cache" / "images").rglob("*.png")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--generator", default="tiny-sd")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (one GPU per process)")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16")
    args = parser.parse_args()
    seeds = "0-1"
    limit = max(1, args.images // 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = None
        for n in [int(p) for p in args.processes.split(",")]:
            times, correct = [], True
            for r in range(args.repeats):
                out = Path(tmp) / f"p{n}-r{r}"
                times.append(run_once(n, out, limit, seeds, args.generator, args.batch_size, args.device,
                                      args.dtype))
                digests = image_digests(out)
                reference = reference or digests
                correct = correct and digests == reference  # every repeat, not just the last
            best = min(times)
            rows.append((n, best, 2 * limit / best, correct, len(digests)))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{2 * limit} images ({args.generator}, batch {args.batch_size}, device {args.device}, dtype "
          f"{args.dtype}) per run, best of {args.repeats}, {device}, 1 torch thread per process; wall time includes "
          "process start-up and imports\n")
    print("| processes | seconds | images/s | speed-up | same images as 1 process |")
    print("| --- | --- | --- | --- | --- |")
    for n, seconds, rate, correct, count in rows:
        print(f"| {n} | {seconds:.1f} | {rate:.2f} | {rows[0][1] / seconds:.2f}x | "
              f"{'yes' if correct else 'NO'} ({count} images) |")


if __name__ == "__main__":
    main()
