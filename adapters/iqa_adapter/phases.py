"""The IQA-Adapter paper's two training phases as presets for ``iqabench train iqa-adapter --phase 1|2``.

Sources: the paper's training description (phase 1: 24,000 steps on CC3M at 512 px with lr 1e-4; phase 2:
3,000 steps on a LAION subset at 1024 px with lr 1e-5), cross-checked with the official code
(X1716/IQA-Adapter): ``train_iqa_adapter.py``'s
argparse defaults are phase 1's (``--resolution 512``, ``--learning_rate 1e-4``, ``--train_batch_size 8``) and
``slurm_train_script.sh`` is the phase-2 fine-tune (``RESOLUTION=1024``, ``LR=1e-5``, ``BSIZE=16`` per GPU,
``NUM_EPOCHS=3``, ``--pretrained_ip_adapter_path`` = the CC3M-trained adapter, ``accelerate launch
--mixed_precision bf16`` on 5 nodes x 8 GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqabench.contracts.errors import UserInputError


@dataclass(frozen=True)
class TrainingPhase:
    number: int
    resolution: int
    learning_rate: float
    batch_size: int  # per device
    epochs: int | None  # None: the phase is given in steps; --epochs N trains N epochs instead
    needs_init: bool  # fine-tunes a phase-1 adapter (--init-from)
    source: str
    steps: int = 1000  # optimizer steps of the phase (the paper's: 24,000 then 3,000)
    dataset: str = ""  # what the paper trains the phase on

    def a100_hours(self, devices: int, grad_accum: int = 1) -> float:
        """Estimated A100-hours: samples x the project's cost model (perf/cost_model.py: 51.6 A100-hours per
        million 1024-px SDXL training samples, a quarter of that at 512 px: 4x fewer latent pixels)."""
        samples = self.steps * self.batch_size * grad_accum * devices
        return samples / 1e6 * A100_HOURS_PER_MILLION_1024 * (self.resolution / 1024) ** 2


#: perf/cost_model.py's SDXL training cost (FLOPs on the real UNet, A100 at 312 TFLOP/s x 35% MFU; not measured)
A100_HOURS_PER_MILLION_1024 = 51.6
#: GPUs of the official slurm_train_script.sh (5 nodes x 8 GPUs): the default of the GPU-hour estimate
PAPER_DEVICES = 40

PHASES = {
    1: TrainingPhase(1, resolution=512, learning_rate=1e-4, batch_size=8, epochs=None, needs_init=False,
                     source="paper (CC3M, 512 px, lr 1e-4, 24,000 steps); official train_iqa_adapter.py defaults",
                     steps=24_000, dataset="CC3M"),
    2: TrainingPhase(2, resolution=1024, learning_rate=1e-5, batch_size=16, epochs=None, needs_init=True,
                     source="paper (LAION subset, 1024 px, lr 1e-5, 3,000 steps); official slurm_train_script.sh "
                            "(batch 16, bf16; it counts 3 epochs instead: --epochs 3)",
                     steps=3_000, dataset="LAION subset"),
}
PAPER_MIXED_PRECISION = "bf16"  # official slurm_train_script.sh: accelerate launch --mixed_precision bf16
#: ``train iqa-adapter --preset paper``: phase 1 then phase 2, AdamW (0.9, 0.999, wd 1e-2), bf16
PAPER_OPTIMIZER = {"optimizer": "AdamW", "betas": (0.9, 0.999), "weight_decay": 1e-2}


def phase(number: int) -> TrainingPhase:
    if number not in PHASES:
        raise UserInputError(f"--phase {number} is unknown: the paper has phase 1 (512 px, lr 1e-4) and "
                             "phase 2 (1024 px fine-tune, lr 1e-5)")
    return PHASES[number]


def resolve_mixed_precision(choice: str, device: str | torch.device | None = None) -> tuple[str, str]:
    """(accelerate's mixed_precision, why) for ``choice`` (``auto``, ``no``, ``fp16``, ``bf16``).

    ``auto`` is the paper's bf16 where the device runs it natively (CUDA with bf16 support), else fp32: on a
    CPU, bf16 autocast is slower than fp32 for these convolution-heavy UNets and not what the paper ran.
    """
    if choice != "auto":
        return choice, "as asked"
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return PAPER_MIXED_PRECISION, "bf16, as the paper's runs (the GPU supports it)"
    return "no", f"fp32: the paper's bf16 needs a GPU with bf16 support, and this run is on {kind}"
