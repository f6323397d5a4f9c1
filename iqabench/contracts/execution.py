"""*How* a run executes, apart from *what* it computes: device, batch size, fast paths, processes.

A :class:`~iqabench.contracts.specs.RunSpec` says what is run (benchmark, generators,
metrics, prompts, seeds, baseline, benchmark options, dtype); an
:class:`Execution` says how. A speed setting never changes what a pipeline
means (diffusers keeps ``torch.compile`` and attention processors apart from
the pipeline's arguments the same way), so nothing here enters image keys, and
only the device enters the run id (see :func:`iqabench.engine.manifest.default_run_id`).
Changing ``--batch-size``, ``--compile`` or ``--channels-last`` resumes the same
run folder.

A contract: it imports no torch and nothing above :mod:`iqabench.contracts`; the
resolved :class:`~iqabench.execution.runtime.Runtime` is built from it by
:meth:`~iqabench.execution.runtime.Runtime.from_execution`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .errors import UserInputError

#: a batch size as the user gives it: a number, or ``"auto"`` (probe upwards, back off on out-of-memory)
BatchSize = int | Literal["auto"]


def parse_batch_size(value: int | str) -> BatchSize:
    """``8`` or ``"8"`` -> 8, ``"auto"`` -> ``"auto"``; anything else is the user's mistake, in one sentence."""
    if value == "auto":
        return "auto"
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UserInputError(f"--batch-size must be a number or 'auto', not {value!r}") from None
    if size < 1 or str(size) != str(value).strip():
        raise UserInputError(f"--batch-size must be a whole number of at least 1 or 'auto', not {value!r}")
    return size


@dataclass(frozen=True)
class Execution:
    """Device, batch size (a number or ``"auto"``), opt-in fast paths and the number of processes."""

    device: str = "auto"
    batch_size: BatchSize = 4
    compile: bool = False
    channels_last: bool = False
    fuse_qkv: bool = False
    sdpa_backend: str = "auto"
    attention_slicing: bool = False
    num_processes: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_size", parse_batch_size(self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_legacy(cls, device: str | None = None, batch_size: int | str | None = None,
                    options: Mapping[str, Any] | None = None) -> Execution:
        """The execution a RunSpec written before this split described: its ``device``/``batch_size`` fields and
        the speed flags it carried in ``options``."""
        options = options or {}
        size: BatchSize = "auto" if options.get("auto_batch_size") else parse_batch_size(
            4 if batch_size is None else batch_size)
        return cls(device=device or "auto", batch_size=size, compile=bool(options.get("compile", False)),
                   channels_last=bool(options.get("channels_last", False)),
                   fuse_qkv=bool(options.get("fuse_qkv", False)),
                   sdpa_backend=str(options.get("sdpa_backend", "auto")),
                   attention_slicing=bool(options.get("attention_slicing", False)))
