"""Histories of timed operations from several processes, and the checks run on them afterwards.

Times are ``time.monotonic()``, which on Linux is one clock for every process of the machine,
so operations of different processes can be ordered by it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Write:
    """A save that returned: the value it stored, and when it returned."""

    value: int
    returned: float


@dataclass(frozen=True)
class Read:
    """A read: the value it returned, when it began and ended, and which process made it."""

    value: int
    began: float
    ended: float
    process: int = 0


def stale_reads(writes: Iterable[Write], reads: Iterable[Read]) -> list[tuple[Read, int]]:
    """Return each read older than a save that had returned before the read began, with that value.

    Values only grow (a counter), so the newest value a read must see is the highest value
    among the saves that returned before it began.
    """
    done = sorted(writes, key=lambda write: write.returned)
    times = [write.returned for write in done]
    highest: list[int] = []
    for write in done:
        highest.append(max(write.value, highest[-1]) if highest else write.value)
    stale = []
    for read in reads:
        index = bisect.bisect_left(times, read.began)  # the saves that returned strictly before
        if index and read.value < highest[index - 1]:
            stale.append((read, highest[index - 1]))
    return stale


def backward_steps(reads: Iterable[Read]) -> list[tuple[Read, Read]]:
    """Return each pair of reads of one process where the later returned an older value."""
    last: dict[int, Read] = {}
    steps = []
    for read in sorted(reads, key=lambda read: (read.process, read.began)):
        previous = last.get(read.process)
        if previous is not None and read.value < previous.value:
            steps.append((previous, read))
        if previous is None or read.value >= previous.value:
            last[read.process] = read
    return steps
