"""A progress bar for long commands, drawn on stderr so stdout stays clean for data.

On a terminal, rich (:mod:`rich.progress`) draws the bar in place with the count, the rate and
the time left. Elsewhere (a log, a pipe, a test) it prints one plain line per tenth of the
work, so long runs still show progress without flooding the output or filling a log with
terminal control codes. The bar is decoration: a stream it cannot write (closed, full, a pipe
whose reader left) turns it off, and the work goes on.
"""

from __future__ import annotations

import sys
from contextlib import suppress
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

#: width of the plain bar printed when stderr is not a terminal
WIDTH = 30
#: what writing a stream that is closed (None, when the process was started with ``2>&-``), on a
#: full device, or a pipe whose reader left, raises: the bar then turns itself off
UNWRITABLE = (OSError, ValueError, AttributeError)


class _Rate(ProgressColumn):
    """Items per second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class Progress:
    """Count work done out of ``total`` and draw it: ``with Progress(n, "copy") as bar: bar.advance()``."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, *,
                 enabled: bool = True) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.done = 0
        try:
            self._tty = bool(self.stream.isatty())
        except UNWRITABLE:  # no stream (2>&-) or a closed one: nothing is drawn, see advance
            self._tty = False
        self._last_tenth = -1
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if not self.enabled:
            return
        try:
            self._draw()
        except UNWRITABLE:
            self._off()

    def _draw(self) -> None:
        if self._tty:
            if self._bar is None:  # used without ``with``: start drawing at the first step
                self._start()
            assert self._bar is not None and self._task is not None
            self._bar.update(self._task, completed=self.done)
            return
        tenth = min(10, self.done * 10 // self.total)
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def _line(self) -> str:
        fraction = min(1.0, self.done / self.total)
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        return f"{self.label} [{bar}] {self.done}/{self.total} ({fraction:.0%})"

    def _start(self) -> None:
        console = Console(file=self.stream, force_terminal=True)
        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), _Rate(), TimeRemainingColumn(), console=console)
        self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
        self._bar.start()

    def _off(self) -> None:
        """Stop drawing for good: the bar is decoration, and a stream it cannot write stops no work."""
        self.enabled = False
        self._stop()

    def _stop(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            with suppress(*UNWRITABLE):
                bar.stop()

    def __enter__(self) -> Progress:
        if self.enabled and self._tty:
            try:
                self._start()
            except UNWRITABLE:
                self._off()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop()
