"""Opt-in speed-ups for diffusers pipelines: torch.compile, channels_last, fused QKV, SDPA backend.

All of them are off by default because none is bit-exact: each changes the
order of floating-point operations, so images move by rounding (checked in
``tests/test_fast_paths.py`` against the default path on the tiny models:
at most 2 of 255 8-bit levels on any pixel in float32, mean absolute
difference below 0.1 level). Like the batch size, they are *not* part of the generator
fingerprint: one image cache serves runs with and without them, and the run's
manifest records which were on.

* ``compile``: ``torch.compile`` on the denoiser (in place, so attention
  processors and adapters set afterwards still apply) and on the VAE decoder
  (the decode is a large share of an SDXL image: ~10 of ~280 TFLOP at 20 steps).
* ``channels_last``: NHWC memory format for the UNet and VAE convolutions, which
  is what tensor-core convolution kernels want (diffusers' speed guide).
* ``fuse_qkv``: one matmul for q, k and v (diffusers' ``fuse_qkv_projections``).
  It swaps in diffusers' own fused attention processor, so it refuses pipelines
  whose processors were replaced (IQA-Adapter's quality attention) rather than
  silently dropping them.
* ``sdpa_backend``: restrict ``scaled_dot_product_attention`` to one kernel
  (``flash``, ``efficient``, ``cudnn``, ``math``) for the pipeline call;
  ``auto`` lets torch choose, as by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..contracts.errors import UserInputError

SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


@dataclass(frozen=True)
class FastPaths:
    """Which opt-in speed-ups to apply; the default applies none."""

    compile: bool = False
    channels_last: bool = False
    fuse_qkv: bool = False
    sdpa_backend: str = "auto"
    #: torch.compile backend; "inductor" on real runs, tests may use "aot_eager" to check the wiring quickly.
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.sdpa_backend not in SDPA_BACKENDS:
            raise UserInputError(f"SDPA backend {self.sdpa_backend!r} is unknown: choose one of "
                                 f"{', '.join(SDPA_BACKENDS)}")

    @classmethod
    def from_runtime(cls, runtime: Any) -> FastPaths:
        return cls(compile=bool(getattr(runtime, "compile", False)),
                   channels_last=bool(getattr(runtime, "channels_last", False)),
                   fuse_qkv=bool(getattr(runtime, "fuse_qkv", False)),
                   sdpa_backend=str(getattr(runtime, "sdpa_backend", "auto") or "auto"))

    @property
    def any(self) -> bool:
        return self.compile or self.channels_last or self.fuse_qkv or self.sdpa_backend != "auto"

    def describe(self) -> dict[str, Any]:
        """For the run manifest: what was on."""
        return {"compile": self.compile, "channels_last": self.channels_last, "fuse_qkv": self.fuse_qkv,
                "sdpa_backend": self.sdpa_backend}


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def _default_processors_only(model: Any) -> bool:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    processors = getattr(model, "attn_processors", {})
    return all(type(p) in (AttnProcessor, AttnProcessor2_0) for p in processors.values())


def apply_fast_paths(pipe: Any, paths: FastPaths, *, name: str = "generator") -> Any:
    """Apply ``paths`` to a loaded pipeline (after it has its device and dtype); returns the pipeline.

    Order matters: memory format and fused weights first, compilation last, so
    the compiled graphs see the final modules.
    """
    denoiser, vae = _denoiser(pipe), getattr(pipe, "vae", None)
    models = [m for m in (denoiser, vae) if m is not None]
    if paths.channels_last:
        for model in models:
            model.to(memory_format=torch.channels_last)
    if paths.fuse_qkv:
        for model in models:
            if not hasattr(model, "fuse_qkv_projections"):
                continue
            if not _default_processors_only(model):
                raise UserInputError(f"{name}: --fuse-qkv replaces the attention processors, and this pipeline uses "
                                     "its own (e.g. IQA-Adapter's quality attention); run it without --fuse-qkv")
            model.fuse_qkv_projections()
    if paths.compile:
        if denoiser is not None:
            denoiser.compile(backend=paths.compile_backend)  # in place: later processor swaps still apply
        decoder = getattr(vae, "decoder", None)
        if decoder is not None:
            decoder.compile(backend=paths.compile_backend)
    return pipe


@contextlib.contextmanager
def sdpa_backend(choice: str) -> Iterator[None]:
    """Restrict scaled-dot-product attention to one kernel for the block (``auto``: no restriction)."""
    if choice == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[choice]
    with sdpa_kernel(backend):
        yield
