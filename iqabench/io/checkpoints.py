"""Training checkpoint folders (``checkpoint-N/``) shared by the IQA-Adapter and ACPO trainers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_folders(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) for every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_RE.match(p.name)))


def latest_checkpoint(output_dir: str | Path, required: Iterable[str]) -> Path | None:
    """The newest complete checkpoint: one holding every ``required`` file (a half-written one is skipped)."""
    needed = list(required)
    complete = [p for _, p in checkpoint_folders(output_dir) if all((p / name).is_file() for name in needed)]
    return complete[-1] if complete else None
