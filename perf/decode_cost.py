"""The guidance gradient's decode path alone: the SD/SDXL VAE decoder vs the tiny decoder (TAESD), at full size.

One guided step's extra work is ``grad_{z_t} log f(D(z_t))``: the decoder forward and backward at the image
size. This bench times exactly that, for the real architectures (the SD VAE of ``perf/cost_model.py``, which
SDXL shares, and ``AutoencoderTiny()``'s defaults, which are TAESD's and TAESDXL's released config) with random
weights, and counts their FLOPs, so the saving of ``decoder=tiny`` can be read off without a UNet or a
metric. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA (not measured on CPU).

Usage: python perf/decode_cost.py [--size 256] [--device cpu] [--dtype auto] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import counted_flops, device_name, emit, print_table, timed  # noqa: E402
from cost_model import SD_VAE  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gradient_step(decoder, latent: torch.Tensor, checkpointing: bool) -> None:
    """decode -> mean brightness -> backward to the latent (what guidance does, minus the metric)."""
    if getattr(decoder, "_supports_gradient_checkpointing", False):
        if checkpointing:
            decoder.enable_gradient_checkpointing()
        else:
            decoder.disable_gradient_checkpointing()
    z = latent.detach().requires_grad_(True)
    image = decoder.decode(z).sample
    image.float().mean().backward()  # (.backward, not autograd.grad: FlopCounterMode's hooks need it)
    assert z.grad is not None and torch.isfinite(z.grad).all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latent side = size / 8)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="auto: bf16 on CUDA, else fp32")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from diffusers import AutoencoderKL, AutoencoderTiny

    device = torch.device(args.device)
    if args.dtype == "auto":
        args.dtype = "bf16" if device.type == "cuda" else "fp32"
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    latent = torch.randn(1, 4, args.size // 8, args.size // 8, device=device, dtype=dtype)
    decoders = {"vae (checkpointing block, the default)": (lambda: AutoencoderKL(**SD_VAE), True),
                "vae (checkpointing off)": (lambda: AutoencoderKL(**SD_VAE), False),
                "tiny decoder (TAESD/TAESDXL architecture)": (AutoencoderTiny, False)}
    rows, reference = [], None
    for label, (build, checkpointing) in decoders.items():
        torch.manual_seed(0)
        model = build().to(device, dtype).eval().requires_grad_(False)  # one decoder on the device at a time
        flops = counted_flops(lambda m=model: gradient_step(m, latent, False))  # (FlopCounterMode and
        # diffusers' checkpointing do not mix; the recomputation adds one decoder forward on top)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = min(timed(lambda m=model, c=checkpointing: gradient_step(m, latent, c), device)[0]
                      for _ in range(args.repeats))
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        reference = reference or seconds
        rows.append([label, seconds, reference / seconds, flops / 1e9, peak])
        emit("decode_cost", decoder=label, size=args.size, s=seconds, speedup=reference / seconds,
             gflops=flops / 1e9, peak_mib=peak, device=device_name(device), dtype=args.dtype)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(f"guidance decode path, forward + backward at {args.size} px, batch 1, {args.dtype}, "
                f"{device_name(device)}", ["decoder", "seconds", "x faster than the default", "GFLOPs (no recompute)",
                                           "peak MiB"], rows)


if __name__ == "__main__":
    main()
