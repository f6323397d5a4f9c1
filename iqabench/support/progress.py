"""One progress mechanism (rich) for iqabench's long loops outside the runner: dataset scoring, training.

The runner reports through its ``progress(description, total)`` factory, which the CLI fills with rich bars
(:mod:`iqabench.cli.progress`); the training and dataset loops of the plugin packages use
:class:`ProgressBar`, the same rich bars on stderr, instead of a second library (tqdm) with another look.
"""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """A rich progress bar with the few calls loops need: ``update(n)``, ``set_postfix(**values)``, ``close()``."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "", disable: bool = False):
        self._progress = None
        if disable:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        # no refresh thread when stderr is not a terminal (nohup, Slurm): nobody sees the redraws; the final
        # state is written when the bar stops
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                                  console=console, auto_refresh=console.is_terminal)
        self._task = self._progress.add_task(desc, total=total, completed=initial, postfix="")
        self._progress.start()

    def update(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_postfix(self, **values: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, postfix=" ".join(f"{k}={v}" for k, v in values.items()))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
