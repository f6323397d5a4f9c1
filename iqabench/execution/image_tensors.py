"""Images as tensors: 8-bit quantisation that matches the PNG cache, and parallel decoding of cached PNGs.

Scoring images made in this run straight from the pipeline's output tensor
(score while generating) must give exactly the scores of decoding the PNG that
was written for them, or a run's scores would depend on whether its images
were cached. Two rules make that hold bit for bit:

* :func:`quantize` rounds the pipeline's [0, 1] tensor to uint8 the way
  diffusers' ``VaeImageProcessor.numpy_to_pil`` does (``(x * 255).round()`` on
  float32, round half to even in both numpy and torch), so the PNG encoded from
  it is the one ``output_type="pil"`` gives;
* :func:`to_unit_float` turns uint8 into float32 in [0, 1] as the decode path
  always did (``uint8 as float32 / 255``), so the metric sees the same numbers
  whether the pixels came from memory or from disk.

:class:`ParallelDecoder` decodes cached PNGs on a thread pool (Pillow releases
the GIL while inflating, so threads scale and nothing is pickled between
processes), stacks equal-sized images into uint8 batches, pins them when the
target is a CUDA device and copies them without blocking; the float conversion
happens on the device, where it is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] floats in [0, 1] (any dtype, any device) -> uint8 on the same device, as diffusers' PIL path.

    diffusers: ``pt_to_numpy`` (``.cpu().permute(...).float()``) then
    ``(images * 255).round().astype("uint8")``. The same float32 arithmetic on
    any device gives the same bytes (IEEE multiply, round half to even).
    """
    return (images.float() * 255).round().clamp_(0, 255).to(torch.uint8)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], the exact numbers the PNG decode path produces."""
    return images.to(torch.float32) / 255.0


def to_pil(image: torch.Tensor) -> Image.Image:
    """One uint8 [3, H, W] tensor -> RGB PIL image (what the PNG writer encodes)."""
    array = image.detach().to("cpu").permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array)  # uint8 HxWx3 -> RGB, exactly as diffusers.numpy_to_pil


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W] on the CPU (no float copy)."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def generate_uint8(generator: Any, items: Sequence[Any]) -> list[torch.Tensor]:
    """One uint8 [3, H, W] tensor per item: ``generator.generate_tensors`` when it has one (on its device, no
    PIL round trip), else its PIL images converted (plugin generators that implement only ``generate``).

    A subclass that overrides ``generate`` below the class that provides ``generate_tensors`` (a plugin
    customising a built-in generator) gets its ``generate`` called: the override is what the user meant.
    """
    if _tensors_are_authoritative(type(generator)):
        return list(generator.generate_tensors(items))
    return [pil_to_uint8(image) for image in generator.generate(items)]


def _tensors_are_authoritative(cls: type) -> bool:
    provider = next((c for c in cls.__mro__ if "generate_tensors" in vars(c)), None)
    if provider is None:
        return False
    overrider = next((c for c in cls.__mro__ if "generate" in vars(c)), None)
    return overrider is None or issubclass(provider, overrider)


def stack_by_size(keys: Sequence[str], images: Sequence[torch.Tensor]) -> list[tuple[list[str], torch.Tensor]]:
    """Group same-sized images into stacked batches (items of one call may ask for different sizes)."""
    groups: dict[tuple[int, ...], tuple[list[str], list[torch.Tensor]]] = {}
    for key, image in zip(keys, images, strict=True):
        members = groups.setdefault(tuple(image.shape), ([], []))
        members[0].append(key)
        members[1].append(image)
    return [(group_keys, torch.stack(tensors)) for group_keys, tensors in groups.values()]


def default_workers() -> int:
    """Decode threads: the CPUs this process may use, capped at 8 (PNG inflate saturates memory bandwidth)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


@dataclass
class DecodedBatch:
    """Same-size images of one batch: ``keys[i]`` is ``images[i]`` (uint8 on the target device)."""

    keys: list[str]
    images: torch.Tensor


@dataclass
class DecodeResult:
    batches: list[DecodedBatch] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)


class ParallelDecoder:
    """Decode image files on a thread pool, ``prefetch`` batches ahead of the consumer.

    ``load`` maps a key to a PIL image (``Store.load_image``). Each yielded item
    is the :class:`DecodeResult` of one input batch: equal-sized images stacked
    (a batch of mixed sizes gives one :class:`DecodedBatch` per size) and the keys
    that failed to decode with their error, so a corrupt file costs one score row,
    not the run.
    """

    def __init__(self, load: Callable[[str], Image.Image], device: torch.device | str = "cpu",
                 workers: int | None = None, prefetch: int = 2):
        self.load = load
        self.device = torch.device(device)
        self.workers = workers or default_workers()
        self.prefetch = max(1, prefetch)

    def _decode(self, key: str) -> torch.Tensor:
        return pil_to_uint8(self.load(key))

    def _collect(self, keys: Sequence[str], futures: list[Future]) -> DecodeResult:
        result = DecodeResult()
        by_size: dict[tuple[int, int], list[tuple[str, torch.Tensor]]] = {}
        for key, future in zip(keys, futures, strict=True):
            try:
                tensor = future.result()
            except Exception as exc:  # unreadable / corrupt file: reported per image
                result.failed[key] = exc
                continue
            by_size.setdefault(tuple(tensor.shape[-2:]), []).append((key, tensor))
        pin = self.device.type == "cuda"
        for members in by_size.values():
            stacked = torch.stack([t for _, t in members])
            if pin:
                stacked = stacked.pin_memory()
            result.batches.append(DecodedBatch([k for k, _ in members],
                                               stacked.to(self.device, non_blocking=pin)))
        return result

    def batches(self, key_batches: Sequence[Sequence[str]]) -> Iterator[DecodeResult]:
        """Decode ``key_batches`` in order; while one batch is scored, the next ``prefetch`` are decoding."""
        if not key_batches:
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="iqabench-decode") as pool:
            queued: list[tuple[Sequence[str], list[Future]]] = []
            upcoming = iter(key_batches)

            def enqueue() -> None:
                keys = next(upcoming, None)
                if keys is not None:
                    queued.append((keys, [pool.submit(self._decode, k) for k in keys]))

            for _ in range(self.prefetch + 1):
                enqueue()
            while queued:
                keys, futures = queued.pop(0)
                enqueue()
                yield self._collect(keys, futures)


def decode_serially(load: Callable[[str], Image.Image], keys: Sequence[str]) -> list[torch.Tensor]:
    """The one-at-a-time path (what the runner did before :class:`ParallelDecoder`); kept for the benchmark."""
    return [pil_to_uint8(load(key)) for key in keys]
