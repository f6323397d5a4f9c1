"""Device and dtype selection, shared by generation, scoring and training."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..contracts.errors import UserInputError
from ..contracts.execution import Execution
from .batching import BatchPolicy

DEVICE_KINDS = ("cuda", "mps", "cpu")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, init=False)
class Runtime:
    """Where and in what precision models run, with which fast paths, and the run's batch policy. Immutable.

    ``auto`` picks cuda > mps > cpu and, for dtype, fp16 on cuda (bf16 when the
    card supports it) and fp32 elsewhere: CPU half precision is slow and the
    SDXL VAE is unstable in fp16, so generators may upcast parts on their own.
    Device and dtype are resolved once, here. The batch size is not a field
    but the :class:`~iqabench.execution.batching.BatchPolicy` (fixed, probed for
    ``auto``, halved on out-of-memory) that every batched stage shares:
    ``runtime.batch_size`` is the policy's current size.
    """

    device: str
    dtype: str
    compile: bool  # torch.compile the denoiser and the VAE decoder (worth it for long runs on GPUs)
    attention_slicing: bool  # diffusers' sliced attention: less memory, slower
    channels_last: bool  # NHWC convolutions (see iqabench.execution.fast_paths)
    fuse_qkv: bool  # one matmul for q, k, v (diffusers' fuse_qkv_projections)
    sdpa_backend: str  # auto, flash, efficient, cudnn or math
    batch: BatchPolicy = field(compare=False)

    def __init__(self, device: str = "auto", dtype: str = "auto", batch_size: int | str | BatchPolicy = 4, *,
                 compile: bool = False, attention_slicing: bool = False, channels_last: bool = False,
                 fuse_qkv: bool = False, sdpa_backend: str = "auto") -> None:
        device, dtype = resolve_device(device), dtype
        batch = batch_size if isinstance(batch_size, BatchPolicy) else BatchPolicy(batch_size)
        values = {"device": device, "dtype": resolve_dtype(device, dtype), "compile": compile,
                  "attention_slicing": attention_slicing, "channels_last": channels_last, "fuse_qkv": fuse_qkv,
                  "sdpa_backend": sdpa_backend, "batch": batch}
        for name, value in values.items():
            object.__setattr__(self, name, value)

        from .fast_paths import SDPA_BACKENDS

        if self.sdpa_backend not in SDPA_BACKENDS:
            raise UserInputError(f"unknown SDPA backend {self.sdpa_backend!r}: choose one of "
                                 f"{', '.join(SDPA_BACKENDS)}")

    @classmethod
    def from_execution(cls, execution: Execution, dtype: str, *, device: str | None = None) -> Runtime:
        """The resolved runtime for an :class:`~iqabench.contracts.execution.Execution` and a spec's ``dtype``
        (``device`` overrides, e.g. one GPU per process). Here, not on ``Execution``: the contract stays free of
        torch and of this layer."""
        return cls(device or execution.device, dtype, BatchPolicy(execution.batch_size), compile=execution.compile,
                   attention_slicing=execution.attention_slicing, channels_last=execution.channels_last,
                   fuse_qkv=execution.fuse_qkv, sdpa_backend=execution.sdpa_backend)

    @property
    def batch_size(self) -> int:
        """The batch policy's current size (what the next generation call uses)."""
        return self.batch.size

    @property
    def device_type(self) -> str:
        """``cuda`` for ``cuda:1``: what enters fingerprints and run ids."""
        return self.device.split(":")[0]

    def describe(self) -> dict[str, str]:
        """The resolved device and dtype, as ``run.json`` records them."""
        return {"device": self.device, "device_type": self.device_type, "dtype": self.dtype}

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda > mps > cpu; a device this machine lacks is refused in one sentence."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    kind = str(device).split(":")[0]
    if kind not in DEVICE_KINDS or not re.fullmatch(r"[a-z]+(:\d+)?", str(device)):
        raise UserInputError(f"unknown device {device!r}: choose cuda, cuda:N, mps, cpu or auto")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} was asked for, but torch sees no CUDA GPU here; "
                             "use --device cpu (or auto)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise UserInputError(f"device {device!r} was asked for, but MPS is not available here; "
                             "use --device cpu (or auto)")
    return device


def resolve_dtype(device: str, dtype: str) -> str:
    """``auto`` -> bf16/fp16 on cuda, fp32 elsewhere; an unknown name is refused."""
    kind = device.split(":")[0]
    if dtype == "auto":
        if kind == "cuda":  # cuda:N too (each process of a multi-GPU run)
            dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            dtype = "fp32"
    if dtype not in _DTYPES:
        raise UserInputError(f"unknown dtype {dtype!r}: choose one of fp32, fp16, bf16, auto")
    return dtype
