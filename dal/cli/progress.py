"""A progress bar for long commands, drawn on stderr so stdout stays clean for data.

On a terminal the bar redraws in place at most ten times a second; elsewhere (a log, a
pipe, a test) it prints one line per tenth of the work, so long runs still show progress
without flooding the output.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

WIDTH = 30


class Progress:
    """Count work done out of ``total`` and draw it: ``with Progress(n, "copy") as bar: bar.advance()``."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, *,
                 enabled: bool = True) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn_at = 0.0
        self._last_tenth = -1

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if not self.enabled:
            return
        if self._tty:
            now = time.monotonic()
            if now - self._drawn_at >= 0.1 or self.done >= self.total:
                self._drawn_at = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
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

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
