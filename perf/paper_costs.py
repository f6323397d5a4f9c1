"""GPU-hours of every paper preset (iqabench.support.paper_presets), from the project's cost model (perf/cost_model.py).

Same method as the cost model: FLOPs counted with FlopCounterMode on the real architectures built on the meta
device (no weights), turned into GPU time with a stated peak throughput and an assumed MFU. Generation: steps x
CFG x UNet forward + one VAE decode per image. ACPO training (Table 2's LoRA): per optimizer step, the frozen
and LoRA forwards at the late t, the MSE forward at t_mse and K-1 more rollout forwards, the trainable ones
counted 3x (forward + backward), plus a VAE decode with its backward (3x) per sample. Gradient guidance adds a
VAE decode with its backward at every sampling step after the first (omega = 0 there). Metric costs are not
counted (a ResNet-50-class NR metric is ~0.02% of an SDXL image, see cost_model.py).

Usage: python perf/paper_costs.py [--gpu a100|h100] [--mfu 0.35]   (prints the docs/paper_settings.md table)
"""

from __future__ import annotations

import argparse

import torch
from cost_model import PEAK_TFLOPS, SD15_UNET, SD_VAE, count_flops, sdxl_flops, unet_inputs


def sd14_flops() -> tuple[float, float]:
    """(UNet forward, VAE decode) FLOPs of SD v1.4 at 512 px (64x64 latent): the SD 1.x architecture."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD_VAE)
    args, kwargs = unet_inputs(SD15_UNET, 64, device="meta")
    return count_flops(unet, args, kwargs), count_flops(vae.decoder, (torch.randn(1, 4, 64, 64, device="meta"),))


def main() -> None:
    from iqabench.adapters.acpo.config import AcpoConfig
    from iqabench.support.paper_presets import SETTINGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", choices=sorted(PEAK_TFLOPS), default="a100")
    parser.add_argument("--mfu", type=float, default=0.35)
    args = parser.parse_args()
    effective = PEAK_TFLOPS[args.gpu] * args.mfu * 1e12
    families = {"sdxl": (sdxl_flops(), 35, 2), "sd14": (sd14_flops(), 50, 2)}
    per_image = {name: (steps * cfg * unet + decode) / effective for name, ((unet, decode), steps, cfg)
                 in families.items()}
    for name, ((unet, decode), steps, cfg) in families.items():
        print(f"- {name}: UNet forward {unet / 1e12:.2f} TFLOP, decode {decode / 1e12:.2f} TFLOP, {steps} steps x "
              f"CFG {cfg}: {per_image[name]:.2f} s per image on {args.gpu.upper()} at {args.mfu:.0%} MFU")
    acpo = AcpoConfig(output_dir="-")
    (unet, decode), _, _ = families["sd14"]
    trainable = 1 + 1 + (acpo.rollout_steps - 1)  # LoRA at t, MSE at t_mse, the rest of the rollout
    step = acpo.batch_size * ((1 + 3 * trainable) * unet + 3 * decode) / effective
    train_hours = acpo.max_steps * step / 3600
    print(f"- ACPO training ({acpo.max_steps} steps, batch {acpo.batch_size}, rollout K={acpo.rollout_steps}, "
          f"SD v1.4 512 px): {step:.2f} s per step, {train_hours:.2f} GPU-hours (evaluator cost not counted)\n")
    print(f"| preset | images | {args.gpu.upper()}-hours |")
    print("| --- | --- | --- |")
    (_, sdxl_decode), sdxl_steps, _ = families["sdxl"]
    guided_extra = (sdxl_steps - 1) * 3 * sdxl_decode / effective  # decode fwd+bwd at every step with omega > 0
    for setting in SETTINGS.values():
        seconds = setting.images * per_image[setting.model]
        if "alpha" in setting.generation:  # half the images are guided (the other half is the base model)
            seconds += setting.images / 2 * guided_extra
        extra = f" + {train_hours:.2f} training" if setting.id.startswith("acpo") else ""
        print(f"| paper:{setting.id} | {setting.images:,} | {seconds / 3600:.1f}{extra} |")


if __name__ == "__main__":
    main()
