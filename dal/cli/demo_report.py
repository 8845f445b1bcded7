"""What ``dal demo`` prints, and what its steps hand each other.

A :class:`Report` prints one section per step: its label, what happened (one or two lines,
numbers taken from what the step really did) and how long it took. :class:`Since` reads how
far the context's counters moved, so every count printed is measured, never assumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dal
from dal.exceptions import LinkedObjectError, MissingMandatoryFieldsError, UniqueConstraintError
from dal.hybrids import Backend, BackendType, Disk, Pool, StorageRouter

#: width of the label column
LABEL = 9


class Notes:
    """What one step says: parts joined by ``; `` on a line; :meth:`line` starts the next line."""

    def __init__(self) -> None:
        self.lines: list[list[str]] = [[]]

    def append(self, part: str) -> None:
        self.lines[-1].append(part)

    def line(self, part: str) -> None:
        self.lines.append([part])


class Report:
    """Print each step's notes once it is done, the first line ending with its duration."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit

    @contextmanager
    def step(self, label: str) -> Iterator[Notes]:
        notes = Notes()
        started = time.perf_counter()
        yield notes
        elapsed = (time.perf_counter() - started) * 1000
        first, *rest = ["; ".join(parts) for parts in notes.lines]
        self.emit(f"  {label:<{LABEL}} {first}  [{elapsed:.1f} ms]")
        for text in rest:
            self.emit(f"  {'':<{LABEL}} {text}")


class Since:
    """How far each counter of ``context.stats`` moved since this was made."""

    def __init__(self, context: dal.config.Context) -> None:
        self.stats = context.stats
        self.before = context.stats.snapshot()

    def __call__(self, event: str) -> int:
        return int(self.stats.snapshot().get(event, 0) - self.before.get(event, 0))


@dataclass
class Sample:
    """The objects of the sample model the demo made, for the steps that follow."""

    alba: BackendType
    ceph: BackendType
    backends: list[Backend]
    routers: list[StorageRouter] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    disks: list[Disk] = field(default_factory=list)

    @property
    def first(self) -> Backend:
        return self.backends[0]


def error_of(action: Callable[[], Any]) -> str:
    """Return the refusal ``action`` raised, as ``Type: first sentence``."""
    try:
        action()
    except (UniqueConstraintError, MissingMandatoryFieldsError, LinkedObjectError) as exc:
        return f"{type(exc).__name__}: {str(exc).split(';')[0]}"
    raise AssertionError("the demo expected this to be refused")


def names(objects: Any) -> str:
    """Return the names of ``objects`` (an iterable of hybrids with a ``name``), comma-separated."""
    return ", ".join(str(obj.name) for obj in objects)
