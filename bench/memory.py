"""Peak memory of generation, scoring, gradient guidance and a training step, each in a fresh process.

On CPU it reports the process's peak resident set size (ru_maxrss) after the
stage minus the peak after imports and model construction; on a GPU it also
reports torch.cuda.max_memory_allocated for the stage.

Usage: python bench/memory.py [--generator tiny-sd] [--batch-size 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STAGE = r'''
import json, resource, sys, torch
stage, generator_spec, batch_size, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from iqabench.generators import WorkItem, build_generator
from iqabench.metrics import build_metric
from iqabench.runtime import Runtime
runtime = Runtime(device, "auto", batch_size)
items = [WorkItem(str(i), f"a photo of object number {i}", i) for i in range(batch_size)]
def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def gpu_mib():
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")
if stage == "generate":
    gen = build_generator(generator_spec, runtime); gen.pipeline
    before = rss_mib(); gen.generate(items)
elif stage == "score":
    metrics = [build_metric(m, runtime) for m in ("piqe", "entropy")]
    images = torch.rand(batch_size, 3, 512, 512)
    before = rss_mib()
    for m in metrics: m.score(images)
elif stage == "guidance":
    import iqabench.adapters  # registers guidance:<metric> when present
    from iqabench.metrics import register_metric
    @register_metric("bench_sharpness", lower_better=False, differentiable=True)
    def build(device):
        class Sharpness(torch.nn.Module):
            def forward(self, x):
                return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3)) + 1e-3
        return Sharpness()
    base = generator_spec.split("[")[0]
    gen = build_generator(f"guidance:bench_sharpness[base={base},alpha=30]", runtime); gen.pipeline
    before = rss_mib(); gen.generate(items)
elif stage == "train-step":
    from iqabench.adapters.iqa_adapter.adapter import AdapterConfig
    from iqabench.adapters.iqa_adapter.conditioning import load_stats
    from iqabench.adapters.iqa_adapter.training import build_adapter_for_training
    gen = build_generator(generator_spec, runtime); pipe = gen.load_pipeline()
    stats = load_stats()
    adapter = build_adapter_for_training(pipe, AdapterConfig(("topiq_nr",), stats={"topiq_nr": stats["topiq_nr"]}))
    size = gen.options["height"] // pipe.vae_scale_factor
    latents = torch.randn(batch_size, pipe.unet.config.in_channels, size, size)
    text = torch.randn(batch_size, 8, pipe.unet.config.cross_attention_dim)
    before = rss_mib()
    tokens = adapter.tokens(torch.zeros(batch_size, 1))
    out = pipe.unet(latents, torch.tensor([10] * batch_size), torch.cat([text, tokens], 1)).sample
    out.pow(2).mean().backward()
print(json.dumps({"stage": stage, "baseline_mib": before, "peak_mib": rss_mib(), "gpu_peak_mib": gpu_mib()}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="tiny-sd")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"\n{args.generator}, batch {args.batch_size}, device {args.device}\n")
    print("| stage | RSS after setup MiB | peak RSS MiB | stage adds MiB | GPU peak MiB |")
    print("| --- | --- | --- | --- | --- |")
    for stage in ("generate", "score", "guidance", "train-step"):
        done = subprocess.run([sys.executable, "-c", STAGE, stage, args.generator, str(args.batch_size),
                               args.device], capture_output=True, text=True)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["failed"])[-1][:80]
            print(f"| {stage} | - | - | - | not measured: {reason} |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {stage} | {row['baseline_mib']:.0f} | {row['peak_mib']:.0f} | "
              f"{row['peak_mib'] - row['baseline_mib']:.0f} | {row['gpu_peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
