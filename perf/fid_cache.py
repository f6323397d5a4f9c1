"""Feature cache benchmark for fid-topk: a repeated run re-extracts nothing, another generator only its own images.

Builds a synthetic reference set (seeded noise images with captions) and runs ``fid-topk`` three times into one
Store: a generator (cold cache), the same spec again, then another generator over the same reference. Reports
each run's Inception feature-extraction time (measured around ``InceptionFeatures.features``) and how many images
it ran through the network. Random Inception/CLIP weights (``weights=random``): the timing is what matters here,
the FID values mean nothing.

    python perf/fid_cache.py --n 16 [--device auto] [--dtype auto]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqabench.api import run
from iqabench.benchmarks.fid_topk import features as features_module
from iqabench.contracts.specs import RunSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="reference images (and generated images per run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16 (the generator's precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timings: list[tuple[float, int]] = []
    original = features_module.InceptionFeatures.features

    def timed(self, *a, **k):
        start = time.perf_counter()
        out = original(self, *a, **k)
        timings.append((time.perf_counter() - start, self.n_extracted))
        return out

    features_module.InceptionFeatures.features = timed
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        with open(root / "pairs.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["caption", "image"])
            for i in range(args.n):
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"{i}.png")
                writer.writerow([f"a photo of object {i}", f"{i}.png"])
        options = {"reference": str(root / "pairs.csv"), "weights": "random", "topk": "25", "kid_subsets": 10}
        for generator in ("tiny-sd", "tiny-sd", "tiny-sd[guidance_scale=1.0]"):
            run(RunSpec("fid-topk", [generator], metrics=["piqe", "entropy"], options=options, device=args.device,
                        dtype=args.dtype), out=root / "store", report=False)
    (first, n1), (second, n2), (third, n3) = timings
    print(f"reference images: {args.n}; torch threads: {args.threads}; device {args.device}, dtype {args.dtype}")
    print(f"run 1 tiny-sd (cold cache):        {first:7.3f} s feature extraction, {n1} images extracted")
    print(f"run 2 tiny-sd again (same run):    {second:7.3f} s, {n2} extracted = {second / first:.1%} of run 1")
    print(f"run 3 another generator, same ref: {third:7.3f} s, {n3} extracted = {third / first:.1%} of run 1 "
          "(only its generated images; the reference features come from the cache)")

if __name__ == "__main__":
    main()
