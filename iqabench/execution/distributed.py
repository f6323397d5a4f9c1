"""Several processes sharing one run: which process owns which image, and the barriers between stages.

Ownership is decided by the image key itself, not by its position in a list,
so every stage splits the work the same way (the process that generated an
image also scores it) and a re-run with another plan still agrees.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch


def distributed_shard():
    """(accelerate state, (index, count)) under ``accelerate launch`` or ``torchrun``; else (None, (0, 1)).

    Uses accelerate's PartialState, which sets up torch.distributed (NCCL on
    GPUs, gloo on CPUs) from the launcher's environment; the runner only needs
    its index, count and barrier.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, (0, 1)
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state, (state.process_index, state.num_processes)


def owned_keys(keys: Iterable[str], shard: tuple[int, int]) -> list[str]:
    """This process's share of ``keys``: a key belongs to process ``int(key[:12], 16) % count``."""
    index, count = shard
    return sorted(k for k in keys if int(k[:12], 16) % count == index)


def wait_for_everyone(state) -> None:
    """A barrier across all processes; a no-op for a single process (``state`` None)."""
    if state is not None:
        state.wait_for_everyone()
