"""The hand-written reference that perf/overhead.py measures iqabench against: diffusers + pyiqa, nothing else.

What a researcher writes without a toolkit: load the pipeline, call it in batches with one seeded CPU generator
per image, save each image as a PNG, score the in-memory tensors with pyiqa in batches, write a CSV. It prints one
JSON line with its own clock (imports, load, pipeline calls, PNG writes, scoring: wall seconds, and the process's
CPU seconds of each under ``cpu``) so the driver can put the two sides' stages side by side. ``--model`` is a
diffusers folder or ``tiny-sd`` / ``tiny-sdxl`` (iqabench's offline random pipelines, built in-process: the plain
script then imports that one module for the weights, nothing else).
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyiqa  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

IMPORTS_S = time.perf_counter() - _T0


def load_pipeline(model: str, dtype: torch.dtype, device: str):
    if model in ("tiny-sd", "tiny-sdxl"):
        from iqabench.support import tiny_models

        pipe = tiny_models.tiny_sd_pipeline(0) if model == "tiny-sd" else tiny_models.tiny_sdxl_pipeline(0)
    else:
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(model, torch_dtype=dtype)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts-file", required=True, help="one prompt per line")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--guidance-scale", type=float, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--metrics", default="piqe,entropy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    clock: dict[str, float] = {"imports": IMPORTS_S}
    cpu: dict[str, float] = {"imports": time.process_time(), "pipeline": 0.0, "png": 0.0}
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    prompts = [line for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    pairs = [(i, p, s) for i, p in enumerate(prompts) for s in seeds]

    t, c = time.perf_counter(), time.process_time()
    pipe = load_pipeline(args.model, torch.float32, args.device)
    clock["load"], cpu["load"] = time.perf_counter() - t, time.process_time() - c
    clock["pipeline"] = clock["png"] = 0.0
    tensors = []
    for start in range(0, len(pairs), args.batch_size):
        chunk = pairs[start : start + args.batch_size]
        t, c = time.perf_counter(), time.process_time()
        images = pipe(prompt=[p for _, p, _ in chunk], num_inference_steps=args.steps,
                      guidance_scale=args.guidance_scale, height=args.height, width=args.width,
                      generator=[torch.Generator("cpu").manual_seed(s) for _, _, s in chunk], output_type="pt").images
        clock["pipeline"] += time.perf_counter() - t
        cpu["pipeline"] += time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        for (index, _, seed), image in zip(chunk, images, strict=True):
            array = (image.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            Image.fromarray(array).save(out / "images" / f"{index:05d}_{seed}.png")
        clock["png"] += time.perf_counter() - t
        cpu["png"] += time.process_time() - c
        # scored as the 8-bit values the PNGs hold, as iqabench scores its cache: the same scores on both sides
        tensors.append((images.float().clamp(0, 1).cpu() * 255).round() / 255)
    t, c = time.perf_counter(), time.process_time()
    batch = torch.cat(tensors)
    scores: dict[str, list[float]] = {}
    for name in args.metrics.split(","):
        metric = pyiqa.create_metric(name, device=args.device)
        values = [metric(batch[i : i + args.batch_size].to(args.device)) for i in range(0, len(batch),
                                                                                     args.batch_size)]
        scores[name] = torch.cat([v.flatten().float().cpu() for v in values]).tolist()
    clock["score"], cpu["score"] = time.perf_counter() - t, time.process_time() - c
    with open(out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "seed", *scores])
        for row, (index, _, seed) in enumerate(pairs):
            writer.writerow([index, seed, *(scores[m][row] for m in scores)])
    clock["total_in_process"], cpu["total_in_process"] = time.perf_counter() - _T0, time.process_time()
    print(json.dumps({"side": "plain", "images": len(pairs), "clock": clock, "cpu": cpu,
                      "mean_scores": {m: float(np.mean(v)) for m, v in scores.items()}}), flush=True)


if __name__ == "__main__":
    main()
