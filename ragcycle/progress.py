"""Progress bars for long work, on stderr, that vanish when output is not a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Bar", "ProgressBars", "progress_bars"]


class ProgressBars:
    """Hands out bars; with ``progress`` None every bar is a no-op."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    def bar(self, description: str, total: int | None = 0) -> Bar:
        """A new bar of ``total`` steps (None: not known yet, a counter); ``grow`` it when more
        work is discovered."""
        if self._progress is None:
            return Bar(None, None)
        return Bar(self._progress, self._progress.add_task(description, total=total))


class Bar:
    """One progress bar; both methods are safe to call from worker threads."""

    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, steps: int) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.advance(self._task_id, steps)

    def grow(self, steps: int) -> None:
        if self._progress is not None and self._task_id is not None:
            total = self._progress.tasks[self._task_id].total or 0
            self._progress.update(self._task_id, total=total + steps)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressBars]:
    """Bars on stderr while the block runs, if enabled and stderr is a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield ProgressBars(None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield ProgressBars(progress)
