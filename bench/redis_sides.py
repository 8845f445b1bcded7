"""What ``bench.redis_side_by_side`` compares: one record in four shapes, and timing of many sides.

The record is flat (strings and ints), so every side can hold it: a dal ``RedisHost``, a JSON
string under a key of its own (raw ``GET``/``SET``), a Redis hash (raw ``HGETALL``/``HSET``), a
redis-om ``HashModel`` (whose hashes cannot hold lists or dicts) and a redis-om ``JsonModel``.
``rack`` is what the equality query selects (indexed in dal), ``size`` what the range query
selects (not indexed in dal: dal has no range index, a range query scans).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from redis_om import Field, HashModel, JsonModel

from bench.timing import Side, progress, timed_rounds
from dal import DataObject, Dynamic, Property, Relation

TEAMS = ("storage", "compute", "network", "platform")
#: racks of the equality query: each holds objects / RACKS of the stored objects
RACKS = 20


class RedisHost(DataObject):
    """A machine, flat enough for a Redis hash."""

    name: str
    owner: str
    cores: int
    memory_mb: int
    rack: str
    size: int

    __properties: list[Property[Any]] = [
        Property("name", str, doc="Host name."),
        Property("owner", str, doc="Team that owns the machine."),
        Property("cores", int, default=1),
        Property("memory_mb", int, default=1024),
        Property("rack", str, indexed=True, doc="What the equality query selects."),
        Property("size", int, default=0, doc="Not indexed: what the range query selects."),
    ]
    __relations: list[Relation] = []
    __dynamics: list[Dynamic] = []


class OmHost(HashModel, index=True):  # type: ignore[misc, call-arg]
    """The same record as a redis-om hash (``index=True``: redis-om 1.x refuses ``key()`` without it)."""

    name: str
    owner: str
    cores: int
    memory_mb: int
    rack: str = Field(index=True)
    size: int = Field(index=True, sortable=True)


class OmJsonHost(JsonModel, index=True):  # type: ignore[misc, call-arg]
    """The same record as a redis-om JSON document (needs the RedisJSON module)."""

    name: str
    owner: str
    cores: int
    memory_mb: int
    rack: str = Field(index=True)
    size: int = Field(index=True, sortable=True)


def rack_name(number: int) -> str:
    return f"r{number:02d}"


def host_data(number: int, count: int, prefix: str = "host") -> dict[str, Any]:
    """Return the values of record ``number`` of ``count``: ``size`` runs over 0..count-1 once."""
    return {
        "name": f"{prefix}-{number:06d}.dc1.example.net",
        "owner": TEAMS[number % len(TEAMS)],
        "cores": 8 << (number % 4),
        "memory_mb": 16384 << (number % 3),
        "rack": rack_name(number % RACKS),
        # 7919 is prime, so number * 7919 % count is a permutation when count is not a multiple of it
        "size": number * 7919 % count,
    }


@dataclass
class Outcome:
    """One side of one operation: its rate in each round, or why it could not run at all."""

    label: str
    what: str
    rates: list[float] = field(default_factory=list)
    failure: str = ""
    target: str = ""

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


@dataclass
class Contender:
    """A side to measure: its label, what it does, its operation (as a ``Side``) and its target."""

    label: str
    what: str
    side: Side
    target: str = ""


def failure_of(exc: BaseException) -> str:
    """Return how an exception reads in the table: its type and its first line."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")


def measure_sides(name: str, contenders: list[Contender], *, ops: int, rounds: int) -> list[Outcome]:
    """Warm every side up (a side that raises is recorded as failing, not timed), then time ``rounds``
    rounds of ``ops`` operations per side, the sides taking turns in ``SLICES`` slices per round with
    the order rotated at every slice, so a burst of load from a neighbour falls on all of them."""
    outcomes = {c.label: Outcome(c.label, c.what, target=c.target) for c in contenders}
    running: list[Contender] = []
    for contender in contenders:
        try:
            contender.side.run(max(ops // 10, 5))
        except Exception as exc:  # a failing side is a result, reported verbatim
            outcomes[contender.label].failure = failure_of(exc)
            progress(f"{name}: {contender.label} fails: {failure_of(exc)}")
        else:
            running.append(contender)
    rates = timed_rounds(name, [contender.side for contender in running], ops=ops, rounds=rounds)
    for contender, rate in zip(running, rates, strict=True):
        outcomes[contender.label].rates.extend(rate)
    return [outcomes[c.label] for c in contenders]


def table(results: dict[str, list[Outcome]], baseline: str) -> str:
    """Return the Markdown table: per operation, each side's median rate and its ratio to ``baseline``
    (the ratio of the medians, then the lowest and highest ratio of a single round)."""
    lines = ["| operation | side | ops/s | vs raw | rounds' ratios | target | met? |",
             "|---|---|---:|---:|---:|---|:---:|"]
    for operation, outcomes in results.items():
        raw = next(o for o in outcomes if o.label == baseline)
        for outcome in outcomes:
            if outcome.failure:
                cell = outcome.failure.replace("|", "\\|")
                lines.append(f"| {operation} | {outcome.label} | fails: {cell} | - | - "
                             f"| {outcome.target} | |")
                continue
            ratios = [mine / theirs for mine, theirs in zip(outcome.rates, raw.rates, strict=True)]
            ratio = outcome.rate / raw.rate
            lines.append(f"| {operation} | {outcome.label} | {outcome.rate:,.0f} | {ratio:.2f}x "
                         f"| {min(ratios):.2f}-{max(ratios):.2f} | {outcome.target} "
                         f"| {met(outcome, outcomes, ratio)} |")
    return "\n".join(lines)


def met(outcome: Outcome, outcomes: list[Outcome], ratio: float) -> str:
    """Judge the issue's target: at least 0.9x raw, and faster than every redis-om side that runs."""
    if not outcome.target:
        return ""
    rivals = [o.rate for o in outcomes if o.label.startswith("redis-om") and not o.failure]
    return "yes" if ratio >= 0.9 and all(outcome.rate > rate for rate in rivals) else "no"
