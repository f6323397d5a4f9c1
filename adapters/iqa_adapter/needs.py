"""Every file ``train iqa-adapter`` will load, declared the way a run declares its files
(:mod:`iqabench.contracts.needs`).

The adapter trains on a scored table (``score-dataset``'s, whose metrics ran before), so what it loads is the
base pipeline, whose factory declares its snapshot while it is built, and a ``--init-from`` adapter (the user's,
phase 2). ``train iqa-adapter`` checks these before loading anything; ``iqabench fetch train iqa-adapter ...``
lists or downloads them.
"""

from __future__ import annotations

from pathlib import Path

from iqabench.contracts.needs import Need, collecting, unique
from iqabench.execution.runtime import Runtime


def adapter_training_needs(base: str, init_from: Path | None = None, runtime: Runtime | None = None) -> list[Need]:
    """The base pipeline's files, and the ``--init-from`` adapter when one is given."""
    from iqabench.contracts.generators import build_generator

    with collecting() as declared:
        build_generator(base, runtime or Runtime(device="cpu", dtype="fp32"))  # declares; loads nothing
    needs = list(declared)
    if init_from is not None:
        path = Path(init_from).expanduser()
        present = path.is_file()
        needs.append(Need("IQA-Adapter to start from (--init-from)", path, "manual",
                          "your own, a checkpoint of `iqabench train iqa-adapter`", present,
                          size=path.stat().st_size if present else None, message=f"no adapter checkpoint at {path}"))
    return unique(needs)
