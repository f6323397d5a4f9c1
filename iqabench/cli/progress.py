"""Adapts rich's progress bars to the runner's ``progress(description, total)`` factory."""

from __future__ import annotations

from rich.progress import Progress


class RichProgress:
    """``runner.progress = RichProgress(bar)``: each stage gets one task on the shared bar."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def __call__(self, description: str, total: int):
        task_id = self.progress.add_task(description, total=total)
        progress = self.progress

        class _Task:
            def advance(self, n: int = 1) -> None:
                progress.advance(task_id, n)

            def close(self) -> None:
                progress.update(task_id, visible=True)

        return _Task()
