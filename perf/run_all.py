"""One entry point for the performance checks: runs each perf script and prints one table with the device name.

Each script runs in its own process (a fresh CUDA context and peak-memory counter per script) and prints its
own tables; this collects their machine-readable lines (``{"bench": ...}``) into the summary at the end.

    python perf/run_all.py [--device cpu] [--dtype auto] [--images 64] [--generator tiny-sd] [--quick]
                           [--only scoring,overhead,throughput,guidance,decode,memory,report,adapter-overhead]

``--quick`` shrinks every script's workload (a smoke check of the scripts themselves).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import device_name, print_table  # noqa: E402


def scripts(args) -> dict[str, list[str]]:
    n = 8 if args.quick else args.images
    common = ["--device", args.device, "--dtype", args.dtype]
    return {
        "scoring": ["scoring.py", "--generator", args.generator, "--images", str(n), "--batch-size", "8",
                    "--decode-images", str(n), "--decode-size", "128" if args.quick else "512", *common],
        "overhead": ["overhead_stages.py", "--generator", args.generator, "--images", str(n), "--batch-size", "8",
                     "--repeats", "1" if args.quick else "3", *common],
        "throughput": ["throughput.py", "--generator", args.generator, "--images", "4" if args.quick else "8",
                       "--batch-sizes", "1,4", "--fast-paths",
                       "channels_last,fuse_qkv" if args.quick else "channels_last,fuse_qkv,sdpa efficient,compile",
                       *common],
        "guidance": ["guidance.py", "--base", args.generator, "--images", "2", "--batch-size", "1", *common],
        "memory": ["memory.py", "--generator", args.generator, "--batch-size", "2", *common],
        "decode": ["decode_cost.py", "--size", "128" if args.quick else "256", "--repeats", "1", *common],
        "report": ["report_cost.py", "--images", "8" if args.quick else "16", "--size", "256" if args.quick else "1024",
                   "--repeats", "1" if args.quick else "3"],
        # a random IQA-Adapter on tiny-sd (its own generator: the adapter needs a base it was built for)
        "adapter-overhead": ["adapter_overhead.py", "--tiny", "--runs", "1" if args.quick else "3",
                             "--batch-size", "4", *common],
    }


def summarize(bench: str, row: dict) -> tuple[str, str] | None:
    """(what, value) for the one-table summary, from one JSON line."""
    if bench == "scoring_in_memory":
        return f"scoring images made in the run: {row['path']}", f"{row['images_per_s']:.1f} images/s"
    if bench == "decode":
        return f"cache-hit decode {row['size']} px: {row['path']}", f"{row['images'] / row['decode_s']:.1f} images/s"
    if bench == "scoring_cache_read":
        ratio = row["speedup"]
        words = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        return (f"scoring cached images at the run's batch {row['toolkit_batch']} (fastest: batch "
                f"{row['fastest_batch']})", f"{words} than pyiqa per file")
    if bench == "overhead":
        return f"toolkit vs plain diffusers + pyiqa, {row['images']} images", f"{row['overhead_pct']:+.1f}%"
    if bench == "throughput":
        rate = f"{row['images_per_s']:.3g} images/s, MFU {100 * row['mfu']:.1f}%"
        return f"generation, batch {row['batch_size']}", rate
    if bench == "fast_path":
        return (f"fast path {row['path']}, batch {row['batch_size']}",
                f"{row['speedup']:.2f}x default, max diff {row['max_diff_levels']} levels")
    if bench == "guidance":
        return (f"guidance {row['run']}", f"{row['s_per_image']:.3g} s/image (x{row['ratio']:.2f}), {row['memory']}, "
                f"max diff vs paper {row['max_diff_vs_paper_255']:.0f}/255, effect cos {row['effect_cos']:.2f}")
    if bench == "decode_cost":
        return (f"guidance decode path at {row['size']} px: {row['decoder']}",
                f"{row['s']:.3g} s fwd+bwd, {row['gflops']:.0f} GFLOPs, x{row['speedup']:.1f} vs the default")
    if bench == "report_cost":
        return (f"report stage, {row['images']} images of {row['size']} px",
                f"save {row['save_s']:.3g} s + render {row['render_pool_s']:.3g} s (first call "
                f"{row['first_save_s'] + row['first_render_s']:.3g} s); thumbnail pool {row['render_speedup']:.2f}x")
    if bench == "adapter_overhead":
        return (f"IQA-Adapter vs its base, {row['images']} images",
                f"{row['overhead_pct']:+.1f}% ({row['adapter_s']:.3g} s vs {row['base_s']:.3g} s)")
    if bench == "memory":
        return f"memory, {row['stage']}", f"{row['stage_adds_mib']:.0f} MiB added, GPU peak {row['gpu_peak_mib']}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--generator", default="tiny-sd")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="scoring,overhead,throughput,guidance,decode,memory,report,adapter-overhead")
    args = parser.parse_args()
    # "auto" means different things per device (bf16/fp16 on CUDA, fp32 elsewhere): the title names what ran
    from iqabench.execution.runtime import Runtime

    dtype = Runtime(args.device, args.dtype).dtype
    rows, failed = [], []
    for name, argv in scripts(args).items():
        if name not in args.only.split(","):
            continue
        print(f"\n## {name}: python perf/{' '.join(argv)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], capture_output=True, text=True)
        print(done.stdout, end="")
        if done.returncode != 0:
            failed.append(name)
            print(done.stderr[-3000:], file=sys.stderr)
        for line in done.stdout.splitlines():
            if line.startswith('{"bench"'):
                row = json.loads(line)
                entry = summarize(row.pop("bench"), row)
                if entry:
                    rows.append((name, *entry))
        rows.append((name, "script wall time", f"{time.perf_counter() - start:.1f} s"
                     + ("" if done.returncode == 0 else f" (FAILED, exit {done.returncode})")))
    print_table(f"# summary on {device_name(args.device)}, dtype {dtype}", ["script", "what", "measured"], rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
