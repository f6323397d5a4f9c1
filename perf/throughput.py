"""Generation throughput and MFU: batch sizes, and each opt-in fast path against the diffusers default.

For every configuration: one warm-up call (loading, compilation, kernel
selection), then ``--images`` images timed; images/s, and MFU = counted FLOPs
per image x images/s / peak (see perf/common.py; the peak is ``--peak-tflops``
or a measured matmul rate in the run's dtype). Fast-path rows also report the
largest 8-bit difference from the default path's images (same seeds).

Usage: python perf/throughput.py [--generator tiny-sd] [--images 8] [--batch-sizes 1,4] [--fast-paths]
                                 [--device cpu] [--dtype auto] [--peak-tflops X]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import counted_flops, device_name, emit, matmul_peak_tflops, print_table, timed  # noqa: E402

FAST_PATHS = {
    "default": {},
    "channels_last": {"channels_last": True},
    "fuse_qkv": {"fuse_qkv": True},
    "sdpa flash": {"sdpa_backend": "flash"},
    "sdpa efficient": {"sdpa_backend": "efficient"},
    "compile": {"compile": True},
    "compile+channels_last+fuse_qkv": {"compile": True, "channels_last": True, "fuse_qkv": True},
}


def _items(n: int):
    from iqabench.contracts.generators import WorkItem

    return [WorkItem(f"p{i}", f"a photo of object number {i}, detailed", i) for i in range(n)]


def measure(generator_spec: str, runtime_kwargs: dict, images: int, batch_size: int):
    from iqabench.contracts.generators import build_generator
    from iqabench.execution.runtime import Runtime

    runtime = Runtime(**runtime_kwargs, batch_size=batch_size)
    generator = build_generator(generator_spec, runtime)
    items = _items(max(images, batch_size))
    generator.generate_tensors(items[:batch_size])  # warm-up
    seconds, out = timed(lambda: generator.generate_tensors(items[:images]), runtime.torch_device)
    return images / seconds, torch.stack([t.cpu() for t in out]), generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="tiny-sd")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--fast-paths", default="", help="comma list of: " + ", ".join(FAST_PATHS) + "; or 'all'")
    parser.add_argument("--fast-batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()

    from iqabench.execution.runtime import Runtime

    base = Runtime(args.device, args.dtype)
    peak = args.peak_tflops or matmul_peak_tflops(base.torch_device, base.torch_dtype)
    _, _, gen = measure(args.generator, {"device": args.device, "dtype": args.dtype}, 1, 1)
    flops = counted_flops(lambda: gen.generate_tensors(_items(1)))
    print(f"device: {device_name(args.device)}, dtype {base.dtype}, {args.generator}; counted work per image "
          f"{flops / 1e12:.4g} TFLOP; peak {peak:.4g} TFLOP/s ({'given' if args.peak_tflops else 'measured matmul'})")
    rows = []
    for size in [int(s) for s in args.batch_sizes.split(",") if s]:
        rate, _, _ = measure(args.generator, {"device": args.device, "dtype": args.dtype}, args.images, size)
        mfu = flops * rate / (peak * 1e12)
        rows.append((f"batch {size}", "default", rate, flops * rate / 1e12, f"{100 * mfu:.1f}%", ""))
        emit("throughput", batch_size=size, path="default", images_per_s=rate, mfu=mfu, device=device_name(args.device))
    chosen = list(FAST_PATHS) if args.fast_paths == "all" else [p for p in args.fast_paths.split(",") if p]
    if chosen:
        reference = None
        ref_rate = None
        for name in ["default", *[c for c in chosen if c != "default"]]:
            kwargs = {"device": args.device, "dtype": args.dtype, **FAST_PATHS[name]}
            try:
                torch._dynamo.reset()
                rate, images, _ = measure(args.generator, kwargs, args.images, args.fast_batch_size)
            except Exception as exc:  # e.g. a flash kernel this card or dtype lacks: one row says so
                rows.append((f"batch {args.fast_batch_size}", name, "-", "-", "-", f"failed: {str(exc)[:60]}"))
                continue
            if reference is None:
                reference, ref_rate = images, rate
            diff = int((images.int() - reference.int()).abs().max())
            mfu = flops * rate / (peak * 1e12)
            rows.append((f"batch {args.fast_batch_size}", name, rate, flops * rate / 1e12, f"{100 * mfu:.1f}%",
                         f"{rate / ref_rate:.2f}x, max diff {diff} levels"))
            emit("fast_path", path=name, batch_size=args.fast_batch_size, images_per_s=rate, mfu=mfu,
                 speedup=rate / ref_rate, max_diff_levels=diff, device=device_name(args.device))
    print_table("generation throughput", ["config", "path", "images/s", "TFLOP/s counted", "MFU", "vs default"],
                rows)


if __name__ == "__main__":
    main()
