"""``--batch-size auto``: measure which batch size generates fastest on this device, and remember it.

A guess (16 on GPUs) is wrong both ways: on an H200 SDXL at 1024 px is no
faster at 8 than at 4 images per call, and a smaller card runs out of memory.
So ``auto`` measures, on the run's own work: the first calls of the
generation stage use growing batch sizes (1, 2, 4, 8, ... up to
``max_size``), each timed after a warm-up call of size 1 (model loading and
first-call kernel selection are not throughput). Probing stops at the first
size that runs out of memory (it does not fit), at the first size that is no
faster per image than the best so far (throughput has saturated), or at
``max_size``; the fastest size that fitted is kept for the rest of the run.
Nothing is wasted: the probe calls generate real images of the plan.

The choice is stored in the Store under (generator fingerprint, device name,
memory, dtype), so the next run on the same card starts at the chosen size
without probing. It is remembered only when the probe finished (it did not run
out of images to make first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..store.store import Store, content_key

_BLOB_KIND = "batch-size/v1"


def device_identity(device: torch.device | str) -> dict[str, Any]:
    """What the best batch size depends on besides the generator: the card model and its memory."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"type": "cuda", "name": props.name, "memory": int(props.total_memory)}
    return {"type": device.type}


def remembered_key(generator_fingerprint: Mapping[str, Any], device: torch.device | str,
                   setup: Mapping[str, Any] | None = None) -> str:
    """``setup``: what else changes speed and memory but not pixels (fast paths, attention slicing)."""
    parts: tuple[Any, ...] = (dict(generator_fingerprint), device_identity(device))
    if setup:
        parts += (dict(setup),)
    return content_key(_BLOB_KIND, *parts)


def recall(store: Store, generator_fingerprint: Mapping[str, Any], device: torch.device | str,
           setup: Mapping[str, Any] | None = None) -> int | None:
    """The batch size an earlier probe chose for this generator on this kind of device and setup, or None."""
    blob = store.get_blob(remembered_key(generator_fingerprint, device, setup))
    if blob is None:
        return None
    try:
        size = int(json.loads(blob.decode("utf-8"))["batch_size"])
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: probe again
    return size if size >= 1 else None


def remember(store: Store, generator_fingerprint: Mapping[str, Any], device: torch.device | str,
             probe: BatchSizeProbe, setup: Mapping[str, Any] | None = None) -> None:
    record = {"batch_size": probe.chosen, "images_per_s": {str(k): v for k, v in probe.throughput.items()},
              "out_of_memory_at": probe.out_of_memory_at, "device": device_identity(device)}
    store.put_blob(remembered_key(generator_fingerprint, device, setup), _BLOB_KIND,
                   json.dumps(record).encode("utf-8"))


@dataclass
class BatchSizeProbe:
    """The probing state machine the generation loop drives: ask :meth:`next_size`, report what happened."""

    max_size: int = 64
    warmups: int = 1
    throughput: dict[int, float] = field(default_factory=dict)  # images per second by batch size
    out_of_memory_at: int | None = None
    finished: bool = False

    def next_size(self) -> int:
        """Batch size of the next call (the chosen one once probing has finished)."""
        if self.finished:
            return self.chosen
        if self.warmups > 0:
            return 1
        return 1 if not self.throughput else 2 * max(self.throughput)

    @property
    def chosen(self) -> int:
        if not self.throughput:
            return 1
        return max(self.throughput, key=lambda size: (self.throughput[size], -size))

    def record(self, size: int, images: int, seconds: float) -> None:
        """A call of ``size`` made ``images`` images in ``seconds`` (synchronised wall time)."""
        if self.finished:
            return
        if self.warmups > 0:
            self.warmups -= 1
            return
        rate = images / max(seconds, 1e-9)
        best = max(self.throughput.values(), default=0.0)
        self.throughput[size] = rate
        if rate <= best or 2 * size > self.max_size:
            self.finished = True

    def record_out_of_memory(self, size: int) -> None:
        """A call of ``size`` ran out of memory: it does not fit, and nothing larger will."""
        self.out_of_memory_at = size
        self.finished = True
        if size == 1 and not self.throughput:
            raise RuntimeError("out of memory with 1 image per batch: this generator does not fit on this device")
