"""sqlite_load: ``Hybrid(guid)`` on the embedded default (SQLite + ``memory://``), vs a raw SELECT.

dal runs on ``sqlite:///<tmp>/bench.sqlite3`` with the default ``memory://`` volatile
store: objects are cached in process memory, and each load first checks whether another
process committed (the WAL-index header of the ``-shm`` file, then SQLite's revision only
when it moved: ``dal/backends/sqlite/watch.py``; ``Context.caches_objects`` is True,
asserted). Every object is cached before timing. The raw side is a plain
``sqlite3`` connection to the same file running ``SELECT value FROM kv WHERE key = ?``
on the same documents, plus ``json.loads``.
"""

from __future__ import annotations

import json
import sqlite3

from bench.benchmarks.common import OBJECTS, compare, store_machines
from bench.env import Environment, Settings
from bench.hybrids import BenchMachine
from bench.report import Result
from dal import configure

NAME = "sqlite_load"
SERVERS: tuple[str, ...] = ()
TARGET = 0.8  # issue 16 (was 0.5)
FULL_OPS = 15000


def run(env: Environment, settings: Settings) -> Result:
    path = env.workdir / "bench.sqlite3"
    context = configure(f"sqlite:///{path}", "memory://", namespace=env.namespace())
    if not context.caches_objects:
        raise AssertionError(f"{NAME}: dal does not cache objects on SQLite + memory://")
    guids = [machine.guid for machine in store_machines(OBJECTS, NAME)]
    for guid in guids:  # the first load of each misses and fills the cache
        BenchMachine(guid)
    keys = [context.keys.doc(BenchMachine._meta.name, guid) for guid in guids]
    raw = sqlite3.connect(path, isolation_level=None)
    count = len(guids)

    def dal_load(index: int) -> object:
        return BenchMachine(guids[index % count])

    def raw_load(index: int) -> object:
        (value,) = raw.execute("SELECT value FROM kv WHERE key = ?", (keys[index % count],)).fetchone()
        return json.loads(value)

    before = context.stats.snapshot()
    measurement = compare(NAME, dal_load, raw_load, settings, FULL_OPS)
    after = context.stats.snapshot()
    raw.close()
    misses = after.get("object_misses", 0) - before.get("object_misses", 0)
    flushes = after.get("object_local_flushes", 0) - before.get("object_local_flushes", 0)
    if misses or flushes:
        raise AssertionError(f"{NAME}: {misses} dal loads missed the object cache and it was flushed "
                             f"{flushes} times; the benchmark must measure cache hits only")
    return Result(NAME, measurement, TARGET,
                  {"object_hits": after.get("object_hits", 0) - before.get("object_hits", 0)})
