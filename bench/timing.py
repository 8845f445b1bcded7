"""The shared timing helper: interleaved rounds of dal and raw operations, medians of each."""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: one operation; called with a running index (unique per side for the whole benchmark)
Operation = Callable[[int], object]


#: each round is split into this many alternating slices per side, so a burst of load from a
#: neighbour lands on both sides instead of on whichever happened to be running
SLICES = 10


@dataclass
class Side:
    """One side of a comparison: the operation and how many times it has run so far.

    ``prepare``, when given, runs before each operation with the same index and is not
    timed (e.g. to empty a cache); then each operation is timed on its own, which is only
    accurate for operations far longer than a microsecond.
    """

    label: str
    operation: Operation
    done: int = 0
    prepare: Operation | None = None

    def run(self, count: int) -> float:
        """Run ``count`` operations (back to back without ``prepare``); return the seconds they took."""
        operation, prepare = self.operation, self.prepare
        start = self.done
        gc.collect()  # start every batch with the same garbage debt
        if prepare is None:
            began = time.perf_counter()
            for index in range(start, start + count):
                operation(index)
            elapsed = time.perf_counter() - began
        else:
            elapsed = 0.0
            for index in range(start, start + count):
                prepare(index)
                began = time.perf_counter()
                operation(index)
                elapsed += time.perf_counter() - began
        self.done += count
        return elapsed


@dataclass(frozen=True)
class Measurement:
    """The per-round rates of both sides; the reported figures are their medians."""

    ops_per_round: int
    dal_rates: tuple[float, ...]
    raw_rates: tuple[float, ...]

    @property
    def dal_rate(self) -> float:
        return statistics.median(self.dal_rates)

    @property
    def raw_rate(self) -> float:
        return statistics.median(self.raw_rates)

    @property
    def ratio(self) -> float:
        return self.dal_rate / self.raw_rate

    @property
    def round_ratios(self) -> tuple[float, ...]:
        """Return dal/raw of each round on its own (the spread shows how noisy the run was)."""
        return tuple(d / r for d, r in zip(self.dal_rates, self.raw_rates, strict=True))


def measure(name: str, dal: Side, raw: Side, *, ops: int, rounds: int) -> Measurement:
    """Warm both sides up, then time ``rounds`` rounds of ``ops`` operations per side.

    Within a round the two sides alternate in ``SLICES`` slices, and the side that goes
    first alternates too, so neither always runs on a cache (CPU, server, page) the other
    just warmed, nor always after the other's garbage, nor alone through a noisy second.
    """
    warmup = max(ops // 10, 5)
    dal.run(warmup)
    raw.run(warmup)
    dal_rates, raw_rates = timed_rounds(name, [dal, raw], ops=ops, rounds=rounds)
    return Measurement(max(ops // SLICES, 1) * SLICES, tuple(dal_rates), tuple(raw_rates))


def timed_rounds(name: str, sides: Sequence[Side], *, ops: int, rounds: int) -> list[list[float]]:
    """Time ``rounds`` rounds of ``ops`` operations of every side; return each side's rate per round.

    The sides take turns in ``SLICES`` slices per round, the order rotated at every slice (for two
    sides: the one that goes first alternates), so a burst of load from a neighbour falls on all.
    """
    per_slice = max(ops // SLICES, 1)
    rates: list[list[float]] = [[] for _ in sides]
    for number in range(rounds if sides else 0):
        seconds = [0.0] * len(sides)
        for piece in range(SLICES):
            turn = (number * SLICES + piece) % len(sides)
            for index in [*range(turn, len(sides)), *range(turn)]:
                seconds[index] += sides[index].run(per_slice)
        for index, spent in enumerate(seconds):
            rates[index].append(per_slice * SLICES / spent)
        progress(f"{name}: round {number + 1}/{rounds}: " + ", ".join(
            f"{side.label} {rate[-1]:,.0f}/s" for side, rate in zip(sides, rates, strict=True)))
    return rates


def profile(side: Side, ops: int, *, limit: int = 30) -> str:
    """Run one more batch of ``side`` under cProfile; return the top functions by own time."""
    profiler = cProfile.Profile()
    prepare = side.prepare
    if prepare is not None:  # keep the untimed preparation out of the profile too
        def quiet(index: int) -> object:
            profiler.disable()
            try:
                return prepare(index)
            finally:
                profiler.enable()
        side.prepare = quiet
    profiler.enable()
    try:
        side.run(ops)
    finally:
        profiler.disable()
        side.prepare = prepare
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def progress(message: str) -> None:
    """Report progress on stderr, so stdout holds only the table."""
    print(message, file=sys.stderr, flush=True)
