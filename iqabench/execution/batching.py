"""The batch policy: how many items go in one call, for every stage that batches.

``--batch-size N`` is a fixed policy; ``--batch-size auto`` probes the
generation stage (:mod:`iqabench.engine.batch_autotune`) and starts every other batched pass
(scoring, Inception features, full-reference pairs, detectors) at
:data:`AUTO_PASS_START`. Either way an out-of-memory error halves the current
size and the same items are retried (:meth:`BatchPolicy.back_off`,
:func:`run_batched`), so a too-large size costs time, never images.

The policy is the one mutable part of a run's :class:`~iqabench.execution.runtime.Runtime`
(which is otherwise frozen): the generation loop sets the size it probed, and
a benchmark's own feature pass reads it through ``ctx.runtime.batch``. A batch
size is *how* a run executes, never *what* it computes, so it enters no run id
and no cache key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..contracts.execution import BatchSize, parse_batch_size

T = TypeVar("T")
R = TypeVar("R")

#: ``auto``'s first size for a pass that is not probed (feature extractors are far lighter than a denoiser).
AUTO_PASS_START = 16


@dataclass
class BatchPolicy:
    """Fixed (``requested`` is a number) or probed (``"auto"``) batch size, with out-of-memory back-off."""

    requested: BatchSize = 4
    size: int = field(init=False)  # the size the next generation call uses

    def __post_init__(self) -> None:
        self.requested = parse_batch_size(self.requested)
        self.size = 1 if self.requested == "auto" else self.requested  # auto: the probe grows from 1
        self._pass_size: int | None = None

    @property
    def auto(self) -> bool:
        return self.requested == "auto"

    def set(self, size: int) -> None:
        """The generation loop's choice (a probe step, a remembered probe, the probe's winner)."""
        self.size = max(1, int(size))

    def back_off(self) -> int:
        """Out of memory at the current size: halve it (not below 1) and return the new size."""
        self.size = max(1, self.size // 2)
        return self.size

    def for_pass(self) -> int:
        """The size a batched pass other than generation starts at: the fixed size, or auto's starting size
        (halved by earlier out-of-memory errors in such a pass)."""
        if self._pass_size is not None:
            return self._pass_size
        return AUTO_PASS_START if self.auto else self.size

    def for_scoring(self) -> int:
        """The scoring stage's size: the fixed size, or with ``auto`` the larger of the generation's current size
        and :meth:`for_pass` (a run whose images are all cached never probes, and must not score one by one); never
        above a size a pass already ran out of memory at (:meth:`pass_back_off`), so later batches start there."""
        size = max(self.size, self.for_pass()) if self.auto else self.size
        return size if self._pass_size is None else min(size, self._pass_size)

    def pass_back_off(self, size: int) -> int:
        """A pass ran out of memory at ``size``: later passes of this run start at half of it."""
        self._pass_size = max(1, size // 2)
        return self._pass_size


def run_batched(items: Sequence[T], call: Callable[[list[T]], list[R]], policy: BatchPolicy | None = None, *,
                size: int | None = None) -> list[R]:
    """``call`` over ``items`` in chunks of the policy's pass size; an out-of-memory error halves the size and
    retries the same chunk (down to one item, where it propagates). Results in input order."""
    from .oom import free_accelerator_memory, is_out_of_memory

    policy = policy or BatchPolicy()
    size = size or policy.for_pass()
    out: list[R] = []
    start = 0
    while start < len(items):
        chunk = list(items[start : start + size])
        try:
            out.extend(call(chunk))
        except Exception as exc:
            if not is_out_of_memory(exc) or size == 1:
                raise
            size = policy.pass_back_off(min(size, len(chunk)))
            free_accelerator_memory()
            continue
        start += len(chunk)
    return out
