"""Helpers every benchmark module shares: compare two operations, store sample machines, count calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.env import Settings
from bench.hybrids import BenchMachine, BenchServer, machine_data
from bench.timing import Measurement, Operation, Side, measure, profile, progress
from dal.cache.counters import Stats
from dal.config import Context

#: the store methods counted_calls counts, by role (``tests/conftest.py`` ``round_trips`` counts the same)
COUNTED_METHODS = {"persistent": ("get", "get_many", "scan", "scan_keys", "commit"),
           "volatile": ("get", "get_many", "gets", "set", "add", "cas", "delete", "delete_many")}
#: objects a load benchmark cycles through: enough to not read one hot key, few enough to set up fast
OBJECTS = 200


def compare(name: str, dal: Operation, raw: Operation, settings: Settings, full_ops: int, *,
            quick_ops: int | None = None, prepare: Operation | None = None) -> Measurement:
    """Measure ``dal`` against ``raw`` (interleaved rounds); profile the dal side if asked.

    ``prepare`` runs, untimed, before every operation of either side (see ``Side``).
    """
    measurement, _, _ = compare_sides(name, dal, raw, settings, full_ops, quick_ops=quick_ops,
                                      prepare=prepare)
    return measurement


def compare_sides(name: str, dal: Operation, raw: Operation, settings: Settings, full_ops: int, *,
                  quick_ops: int | None = None,
                  prepare: Operation | None = None) -> tuple[Measurement, Side, Side]:
    """``compare``, also returning the two sides: ``Side.done`` counts every operation run
    (warm-up, rounds and the profiled batch), to check against the statistics dal kept."""
    ops = settings.ops(full_ops, quick_ops)
    dal_side, raw_side = Side("dal", dal, prepare=prepare), Side("raw", raw, prepare=prepare)
    measurement = measure(name, dal_side, raw_side, ops=ops, rounds=settings.rounds)
    if settings.profile:
        progress(f"--- {name}: cProfile of {ops} dal operations ---\n{profile(dal_side, ops)}")
    return measurement, dal_side, raw_side


def compare_saves(name: str, dal: Operation, raw: Operation, settings: Settings, full_ops: int,
                  stats: Stats) -> tuple[Measurement, int]:
    """``compare`` for saves of new objects; raise unless each dal save made exactly one commit.

    A new object's save commits at least once (nothing else stores it), so as many commits
    as saves over the whole run means exactly one each, checked without timing the check.
    """
    before = stats["commits"]
    measurement, dal_side, _ = compare_sides(name, dal, raw, settings, full_ops)
    commits, saves = int(stats["commits"] - before), dal_side.done
    if commits != saves:
        raise AssertionError(f"{name}: {saves} saves made {commits} commits; each save must be exactly one")
    return measurement, saves


def schema_check(context: Context, hybrid: str) -> tuple[str, int]:
    """Return the key of ``hybrid``'s schema record (``m/schema/<hybrid>``) and its revision now (0:
    absent). Every dal create and delete commit checks that the record is still at the revision its
    writer planned from (``dal/objects/views.py``), so the raw sides check it too, read once untimed."""
    key = context.keys.schema(hybrid)
    entry = context.persistent.get(key)
    return key, 0 if entry is None else entry.revision


def store_machines(count: int, prefix: str) -> list[BenchMachine]:
    """Save ``count`` new machines through dal in the current context and return them."""
    machines = []
    for number in range(count):
        machine = BenchMachine(data=machine_data(number, prefix))
        machine.save()
        machines.append(machine)
    return machines


def cached_health(count: int) -> tuple[list[str], list[BenchServer], list[object]]:
    """Save ``count`` new servers, load each once and read its ``health`` once (computed and cached);
    return their guids, the loaded servers (the timed reads load nothing) and the values."""
    guids = []
    for number in range(count):
        server = BenchServer(data={"name": f"srv-{number:06d}.dc1.example.net", "rack": number})
        server.save()
        guids.append(server.guid)
    servers = [BenchServer(guid) for guid in guids]
    return guids, servers, [server.health for server in servers]


@contextmanager
def counted_calls(context: Context) -> Iterator[Counter[str]]:
    """Count the calls reaching either store inside the block, by ``role.method`` (wrappers set on
    the instances, and the instances' own attributes put back after)."""
    calls: Counter[str] = Counter()
    patched: list[tuple[Any, str, Any]] = []
    for role, store in (("persistent", context.persistent), ("volatile", context.volatile)):
        for method in COUNTED_METHODS[role]:
            real: Callable[..., Any] = getattr(store, method)

            def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = f"{role}.{method}",
                        **kwargs: Any) -> Any:
                calls[_name] += 1
                return _real(*args, **kwargs)

            patched.append((store, method, vars(store).get(method)))
            setattr(store, method, counted)
    try:
        yield calls
    finally:
        for store, method, own in reversed(patched):
            if own is None:
                delattr(store, method)  # the class's method again
            else:
                setattr(store, method, own)
