"""Device and dtype selection, shared by generation, scoring and training."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

DEVICE_KINDS = ("cuda", "mps", "cpu")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass
class Runtime:
    """Where and in what precision models run, and how many items go in one batch.

    ``auto`` picks cuda > mps > cpu and, for dtype, fp16 on cuda (bf16 when the
    card supports it) and fp32 elsewhere: CPU half precision is slow and the
    SDXL VAE is unstable in fp16, so generators may upcast parts on their own.
    """

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 4
    compile: bool = False  # torch.compile the denoiser and the VAE decoder (worth it for long runs on GPUs)
    attention_slicing: bool = False  # diffusers' sliced attention: less memory, slower
    channels_last: bool = False  # NHWC convolutions (see iqabench.fast_paths)
    fuse_qkv: bool = False  # one matmul for q, k, v (diffusers' fuse_qkv_projections)
    sdpa_backend: str = "auto"  # auto, flash, efficient, cudnn or math

    def __post_init__(self) -> None:
        if self.device == "auto":
            if torch.cuda.is_available():
                self.device = "cuda"
            elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                self.device = "mps"
            else:
                self.device = "cpu"
        kind = str(self.device).split(":")[0]
        if kind not in DEVICE_KINDS or not re.fullmatch(r"[a-z]+(:\d+)?", str(self.device)):
            raise ValueError(f"unknown device {self.device!r}: choose cuda, cuda:N, mps, cpu or auto")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} was asked for, but torch sees no CUDA GPU here; "
                             "use --device cpu (or auto)")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
            raise ValueError(f"device {self.device!r} was asked for, but MPS is not available here; "
                             "use --device cpu (or auto)")
        if self.dtype == "auto":
            if kind == "cuda":  # cuda:N too (each process of a multi-GPU run)
                self.dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                self.dtype = "fp32"
        if self.dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: choose one of fp32, fp16, bf16, auto")
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        from .fast_paths import SDPA_BACKENDS

        if self.sdpa_backend not in SDPA_BACKENDS:
            raise ValueError(f"unknown SDPA backend {self.sdpa_backend!r}: choose one of {', '.join(SDPA_BACKENDS)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)
