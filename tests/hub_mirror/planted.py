"""A malicious pickle for tests: unpickling it creates a marker folder, proof that a loader unpickled a file it
should never have (a real payload would do worse). Every test that plants one checks the marker is absent."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class Planted:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path | str):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def plant(path: Path, marker: Path) -> Path:
    """A ``torch.save`` checkpoint at ``path`` (a real-looking state dict) carrying a :class:`Planted` payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2), "payload": Planted(marker)}, path)
    return path
