"""delete: delete an object nothing points at, vs the raw transaction it needs.

Run on SQLite (``sqlite:///<tmp>/delete.sqlite3`` + ``memory://``, the embedded default) and
on etcd + memcached. Before every operation of either side, untimed, a new ``BenchMachine``
is saved with ``save()`` (a unique name, an indexed status), so each side deletes an object it
holds as after a load (its stored document and revision known): no read of the document.

The dal side is ``machine.delete()`` (``dal/objects/writes.py``). No relation targets
``BenchMachine``, so no link is expected and none is scanned for (``assume_unlinked``): one
commit checking the document's revision, that no link points at the object (``PrefixEmpty`` of
``l/BenchMachine/<guid>/``; were there one, the commit would fail and the delete would scan the
links, then refuse or unlink) and that the hybrid's schema record is still the one the delete
planned from (``Revision`` of ``m/schema/BenchMachine``, ``dal/objects/views.py``), deleting the
document, its unique key and its index entry; then the cache invalidation of the object's cached
document and of the query-result versions its values touch. Asserted, outside the timing, with
every store call counted as ``tests/conftest.py`` ``round_trips`` does: exactly
``EXPECTED[store]`` per delete; and over the run, one commit per save and per dal delete
(``context.stats['commits']``).

The raw side is the same transaction with the driver: on SQLite (``sqlite3``, a connection of
its own with ``PRAGMA synchronous = NORMAL`` as dal's) ``BEGIN IMMEDIATE``, the three checks
(the document's ``revision``, the link prefix's ``max(revision)``, which must be none, the schema
record's ``revision``, read untimed before the run), the revision counter's ``UPDATE`` and
``SELECT``, three ``DELETE``s and ``COMMIT``, the statements ``SqliteStore.commit`` runs; on etcd
(pyetcd) one transaction: the same three compares (document mod revision, link range version 0,
schema record mod revision) and the same three deletes. Nothing else: no cache invalidation, no
journal record (dal's etcd commit also checks that its journal record's key is new, puts the
record and deletes the previous one, ``dal/cache/journal.py``), no failure branch (dal's etcd
transaction carries reads of what each check looked at, run only when one fails).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable

import pyetcd

from bench.benchmarks.common import counted_calls, schema_check
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchMachine, machine_data
from bench.report import Result
from bench.timing import Measurement, Side, measure, profile, progress
from dal import configure
from dal.backends.etcd import prefix_range
from dal.backends.sqlite import prefix_end
from dal.config import Context
from dal.objects.schema import ensure_recorded

NAME = "delete"
SERVERS = (ETCD, MEMCACHED)
TARGET = 0.8
FULL_OPS = 200
QUICK_OPS = 20
#: deletes counted call by call before timing
COUNTED = 3
#: the store calls of one dal delete: the commit (no link scan: nothing is expected to point at a
#: BenchMachine); then the invalidation
#: (memory://: one delete_many in process; memcached: the journal's delivery, one delete_many)
EXPECTED: dict[str, Counter[str]] = {
    "sqlite": Counter({"persistent.commit": 1, "volatile.delete_many": 1}),
    "etcd": Counter({"persistent.commit": 1, "volatile.delete_many": 1}),
}
RAW_CALLS = {"sqlite": "1 write transaction", "etcd": "1 transaction"}

#: one raw delete of the machine handed over
RawDelete = Callable[[BenchMachine], None]


def run(env: Environment, settings: Settings) -> list[Result]:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    path = env.workdir / "delete.sqlite3"
    results: list[Result] = []
    for store in ("sqlite", "etcd"):
        if store == "sqlite":
            context = configure(f"sqlite:///{path}", "memory://", namespace=env.namespace())
        else:
            context = configure(etcd.url, memcached.url, namespace=env.namespace())
        ensure_recorded(context, BenchMachine._meta)  # the first save records the schema: not measured
        raw, close = sqlite_delete(str(path), context) if store == "sqlite" else \
            etcd_delete(etcd.host, etcd.port, context)
        try:
            results.append(measure_store(f"{NAME}_{store}", store, context, raw, settings))
        finally:
            close()
    return results


def sqlite_delete(path: str, context: Context) -> tuple[RawDelete, Callable[[], None]]:
    """Return the raw delete with ``sqlite3`` on ``path`` (SqliteStore's statements), and what closes it."""
    raw = sqlite3.connect(path, isolation_level=None, timeout=30)
    raw.execute("PRAGMA synchronous = NORMAL")
    keys, hybrid = context.keys, BenchMachine._meta.name
    schema_key, schema_revision = schema_check(context, hybrid)
    get = "SELECT value, revision FROM kv WHERE key = ?"
    newest = "SELECT max(revision) FROM kv WHERE key >= ? AND key < ?"

    def delete(machine: BenchMachine) -> None:
        guid = machine.guid
        links = keys.links(hybrid, guid)
        doc_key = keys.doc(hybrid, guid)
        raw.execute("BEGIN IMMEDIATE")
        try:
            row = raw.execute(get, (doc_key,)).fetchone()
            linked = raw.execute(newest, (links, prefix_end(links))).fetchone()[0] or 0
            schema = raw.execute(get, (schema_key,)).fetchone()
            if row is None or row[1] != machine._revision or linked != 0 or \
                    (0 if schema is None else schema[1]) != schema_revision:
                raise AssertionError(unchecked(guid))
            raw.execute("UPDATE meta SET revision = revision + 1 WHERE id = 0")
            raw.execute("SELECT revision FROM meta WHERE id = 0").fetchone()
            for key in (doc_key, keys.unique(hybrid, "name", machine._data["name"]),
                        keys.index(hybrid, "status", machine._data["status"], guid)):
                raw.execute("DELETE FROM kv WHERE key = ?", (key,))
            raw.execute("COMMIT")
        except BaseException:
            raw.execute("ROLLBACK")
            raise

    return delete, raw.close


def etcd_delete(host: str, port: int, context: Context) -> tuple[RawDelete, Callable[[], None]]:
    """Return the raw delete with pyetcd (one transaction), and what closes it."""
    raw = pyetcd.client(host=host, port=port, timeout=5)
    txn = raw.transactions
    keys, hybrid = context.keys, BenchMachine._meta.name
    schema_key, schema_revision = schema_check(context, hybrid)

    def delete(machine: BenchMachine) -> None:
        guid = machine.guid
        start, end = prefix_range(keys.links(hybrid, guid))
        doc_key = keys.doc(hybrid, guid)
        succeeded, _ = raw.transaction(
            compare=[txn.mod(doc_key) == machine._revision, txn.version(start, range_end=end) == 0,
                     txn.mod(schema_key) == schema_revision],
            success=[txn.delete(doc_key), txn.delete(keys.unique(hybrid, "name", machine._data["name"])),
                     txn.delete(keys.index(hybrid, "status", machine._data["status"], guid))],
            failure=[])
        if not succeeded:
            raise AssertionError(unchecked(guid))

    return delete, raw.close


def unchecked(guid: str) -> str:
    """The message of a raw delete whose checks failed: something else wrote to the namespace."""
    return (f"{NAME}: a raw delete's checks failed for {guid}: its document, a link to it or the schema "
            "record of BenchMachine changed after it was read; nothing else may write to the "
            "benchmark's namespace while it runs (run the benchmark again on its own)")


def measure_store(name: str, store: str, context: Context, raw: RawDelete, settings: Settings) -> Result:
    """Compare dal's delete with ``raw`` on one store; check its store calls and commits."""
    pending: dict[str, BenchMachine] = {}

    def creator(side: str) -> Callable[[int], object]:
        def create(index: int) -> object:  # untimed: the object to delete, as after a load
            machine = pending[side] = BenchMachine(data=machine_data(index, f"{name}-{side}"))
            machine.save()
            return machine
        return create

    def dal_delete(index: int) -> object:
        pending.pop("dal").delete()
        return None

    def raw_delete(index: int) -> object:
        raw(pending.pop("raw"))
        return None

    calls: Counter[str] = Counter()
    create = creator("check")
    for index in range(COUNTED):
        create(index)
        with counted_calls(context) as counted:
            pending.pop("check").delete()
        calls += counted
    if calls != Counter({call: count * COUNTED for call, count in EXPECTED[store].items()}):
        raise AssertionError(f"{name}: {COUNTED} deletes made the store calls {dict(calls)}, expected "
                             f"{dict(EXPECTED[store])} each")
    before = context.stats["commits"]
    dal_side = Side("dal", dal_delete, prepare=creator("dal"))
    raw_side = Side("raw", raw_delete, prepare=creator("raw"))
    ops = settings.ops(FULL_OPS, QUICK_OPS)
    measurement: Measurement = measure(name, dal_side, raw_side, ops=ops, rounds=settings.rounds)
    if settings.profile:
        progress(f"--- {name}: cProfile of {ops} dal operations ---\n{profile(dal_side, ops)}")
    commits, saves = int(context.stats["commits"] - before), dal_side.done + raw_side.done
    if commits != saves + dal_side.done:
        raise AssertionError(f"{name}: {saves} saves and {dal_side.done} deletes made {commits} commits; "
                             "each must be exactly one")
    calls_text = ", ".join(f"{call} {count}" for call, count in sorted(EXPECTED[store].items()))
    return Result(name, measurement, TARGET, {"deletes": dal_side.done, "commits": commits,
                                             "store_calls_per_delete": dict(EXPECTED[store])},
                  footnote=f"{name}: store calls of each dal delete (counted): {calls_text}; "
                           f"raw: {RAW_CALLS[store]}")
