"""The progress bars long commands draw on stderr (off when stderr is not a terminal), one
kind per job so that every import and every row rewrite looks and behaves the same."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from mailveil.cli.common import err_console


@contextmanager
def file_progress(name: str, stream: IO[bytes], total: int) -> Iterator[Callable[[], None]]:
    """A bar over the bytes of an imported file; call the yielded function after each item
    (it reads how far the stream is)."""
    with Progress(
        TextColumn("importing {task.fields[name]}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task("import", total=total, name=name)
        yield lambda: progress.update(task, completed=stream.tell())


@contextmanager
def rows_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A transient bar over rows rewritten in batches; the yielded function takes
    (done, total), the shape of the library's progress callbacks."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)
