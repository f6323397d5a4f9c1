"""A finished run as reports address it: the store that holds it and its id.

Its own module so that both :mod:`.render` (one run's page) and :mod:`.compare` (several runs) use it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iqabench.store.store import Store


@dataclass(frozen=True)
class RunRef:
    """A finished run: the store that holds it and its id."""

    store: Store
    run_id: str

    @property
    def folder(self) -> Path:
        return self.store.run_dir(self.run_id)
