"""Out-of-memory back-off: recognise an OOM from any backend and free what can be freed before retrying.

The halving itself is the batch policy's (:class:`iqabench.execution.batching.BatchPolicy`:
``back_off`` in generation, ``pass_back_off`` through :func:`iqabench.execution.batching.run_batched`
and scoring), which retries the same images, so a too-large ``--batch-size`` costs time, never images.
"""

from __future__ import annotations

import gc

import torch


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
