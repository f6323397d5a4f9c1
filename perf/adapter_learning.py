"""Learning check: does a tiny IQA-Adapter learn to follow its quality target? (CPU, a few minutes)

Synthetic data whose quality varies in a way a no-download pyiqa metric sees:
random colour-block images with additive Gaussian noise of a random strength;
pyiqa's ``entropy`` rises with the noise. The images are scored with that
metric (as ``score-dataset`` would), a tiny adapter is trained on the tiny
SD-like model, then images are generated at targets p5..p95 and re-scored.
Reported: Spearman(target percentile, measured metric) per (prompt, seed) and
its mean; the issue asks for >= 0.8.

    python perf/adapter_learning.py [--steps 300] [--threads 1] [--inference-steps 20] [--lr 2e-3]

The suite runs a shorter variant (tests/test_adapter_learning_check.py: fewer steps at a higher learning rate,
under a minute on one core) with the same threshold; this script's defaults are the full check.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from iqabench.adapters.iqa_adapter.adapter import AdapterConfig
from iqabench.adapters.iqa_adapter.dataset import Record, ScoredImageDataset, compute_stats
from iqabench.adapters.iqa_adapter.sampling import quality_pipeline_kwargs, quality_scale
from iqabench.adapters.iqa_adapter.training import TrainConfig, build_adapter_for_training, train_adapter
from iqabench.support.tiny_models import tiny_sd_pipeline

PROMPTS = ["a red square", "blue stripes", "a green field"]
TARGETS = ["p5", "p25", "p50", "p75", "p95"]


def synthetic_images(n: int, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for i in range(n):
        cells = rng.random((4, 4, 3))
        base = np.kron(cells, np.ones((16, 16, 1)))
        sigma = rng.uniform(0.0, 0.35)
        noisy = np.clip(base + rng.normal(0, sigma, base.shape), 0, 1)
        images.append(Image.fromarray((noisy * 255).astype(np.uint8)))
        captions.append(PROMPTS[i % len(PROMPTS)])
    return images, captions


def score(metric, images: list[Image.Image]) -> list[float]:
    batch = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1) for im in images])
    with torch.no_grad():
        return metric(batch).flatten().tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n-images", type=int, default=96)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import pyiqa

    t0 = time.perf_counter()
    metric = pyiqa.create_metric("entropy", device="cpu")
    images, captions = synthetic_images(args.n_images)
    scores = score(metric, images)
    import pandas as pd

    stats = compute_stats(pd.DataFrame({"entropy": scores}), ["entropy"])
    records = [Record(str(i), c, None, (lambda im=im: im)) for i, (im, c) in enumerate(zip(images, captions,
                                                                                           strict=True))]
    data = ScoredImageDataset(records, [[s] for s in scores], ["entropy"], stats, resolution=64)
    pipe = tiny_sd_pipeline(0)
    adapter = build_adapter_for_training(pipe, AdapterConfig(("entropy",), stats=stats, base="tiny-sd"))
    with tempfile.TemporaryDirectory() as out:
        result = train_adapter(pipe, adapter, data, TrainConfig(
            output_dir=out, max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, save_every=10**9,
            progress=False))
    t_train = time.perf_counter() - t0
    adapter.eval()
    rhos = []
    for prompt in PROMPTS:
        for seed in range(args.seeds):
            kwargs = quality_pipeline_kwargs(pipe, adapter, [prompt] * len(TARGETS), targets=TARGETS,
                                             neg_ks=[0.0] * len(TARGETS), guidance_scale=3.0)
            with quality_scale(adapter, [1.0] * len(TARGETS)), torch.no_grad():
                out_images = pipe(**kwargs, guidance_scale=3.0, num_inference_steps=args.inference_steps, height=64,
                                  width=64, generator=[torch.Generator().manual_seed(seed) for _ in TARGETS]).images
            measured = score(metric, out_images)
            rho = float(spearmanr([5, 25, 50, 75, 95], measured).statistic)
            rhos.append(rho)
            print(json.dumps({"prompt": prompt, "seed": seed, "measured": [round(m, 3) for m in measured],
                              "spearman": round(rho, 3)}))
    first, last = np.mean(result.losses[:20]), np.mean(result.losses[-20:])
    print(json.dumps({"mean_spearman": round(float(np.nanmean(rhos)), 3), "n": len(rhos), "steps": result.step,
                      "train_loss_first20": round(float(first), 4), "train_loss_last20": round(float(last), 4),
                      "train_seconds": round(t_train, 1), "total_seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
