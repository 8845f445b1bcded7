"""Worker processes of the writer-kill and signing scenarios.

They live in their own module because ``multiprocessing``'s spawn start method makes each child
import its target by module name (``faults.kill_workers``; tests/ is on ``sys.path``). Workers that get killed
report through shared memory (``RawArray``: no lock a SIGKILL could leave held) and through
their own log file (append, line-buffered), never through a pipe a kill could corrupt.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from dal import DataList, configure
from dal.backends.base import Check, CommitResult, Delete, Op, Put
from dal.config import Context
from dal.exceptions import (
    ConcurrencyError,
    LinkedObjectError,
    ObjectNotFoundError,
    RaceConditionError,
    UniqueConstraintError,
)
from faults.fault_hybrids import Counter
from faults.kill_hybrids import Crate, Depot, KillLedger

#: the operations of a random writer, in the order their index is published in ``current_op``
OPS = ("increment", "create", "delete", "delete_abandon", "add_crate", "move_crate", "drop_crate",
       "ledger", "read")
WEIGHTS = (5, 2, 1, 1, 3, 3, 1, 3, 2)
#: what a writer racing other writers (and their kills) may legitimately be told
EXPECTED = (ObjectNotFoundError, UniqueConstraintError, LinkedObjectError, ConcurrencyError,
            RaceConditionError)
DEPOT_LABELS = 6
MAX_CRATES = 10
#: conflicting increments retried before giving up on one operation
INCREMENT_TRIES = 30

# slots of a targeted writer's ``state`` array
STAGE, KILLED_AT, OLD_REVISION, NEW_REVISION, STALE_AT_KILL = range(5)
STATE_SIZE = 5
#: stages a targeted writer reaches
CONFIGURED, CACHED, KILLING = 1.0, 2.0, 3.0


def _log(path: str, text: str) -> None:
    with open(path, "a", buffering=1) as log:
        log.write(f"{os.getpid()} {time.monotonic():.3f} {text}\n")


def _increment_depot(rng: random.Random) -> None:
    guids = DataList(Depot).guids
    if not guids:
        _create_depot(rng)
        return
    guid = rng.choice(guids)
    for _ in range(INCREMENT_TRIES):
        depot = Depot(guid)
        depot.count += 1
        try:
            depot.save(datastore_wins=None)
            return
        except ConcurrencyError:
            continue


def _create_depot(rng: random.Random) -> None:
    Depot(data={"label": f"d{rng.randrange(DEPOT_LABELS)}"}).save()


def _delete_depot(rng: random.Random, abandon: bool) -> None:
    guids = DataList(Depot).guids
    if guids:
        Depot(rng.choice(guids)).delete(abandon=["crates"] if abandon else None)


def _add_crate(rng: random.Random) -> None:
    depots = DataList(Depot).guids
    if not depots or len(DataList(Crate)) >= MAX_CRATES:
        return
    depot = Depot(rng.choice(depots))
    Crate(data={"name": f"c{rng.randrange(1000)}", "depot": depot}).save()


def _move_crate(rng: random.Random) -> None:
    crates, depots = DataList(Crate).guids, DataList(Depot).guids
    if not crates:
        return
    crate = Crate(rng.choice(crates))
    crate.depot = Depot(rng.choice(depots)) if depots and rng.random() < 0.8 else None
    crate.moves += 1
    crate.save()


def _drop_crate(rng: random.Random) -> None:
    crates = DataList(Crate).guids
    if crates:
        Crate(rng.choice(crates)).delete()


def _read(rng: random.Random) -> None:
    """Load (and so cache) some objects and follow their relations both ways."""
    for crate in DataList(Crate)[:3]:
        if crate.depot is not None:
            crate.depot.count  # noqa: B018 - the load is the point
    depots = DataList(Depot).guids
    if depots:
        depot = Depot(rng.choice(depots))
        len(depot.crates)


def random_writer(persistent: str, volatile: str, namespace: str, worker: int, seed: int,
                  ledger_guid: str, progress: Any, acked: Any, unexpected: Any, expected: Any,
                  current_op: Any, stop: Any, log_path: str, max_ops: int, max_seconds: float) -> None:
    """Run random operations until told to stop (or a bound is reached), unless killed first.

    ``progress[worker]`` counts finished operations, ``current_op[worker]`` names the one under
    way (an index into :data:`OPS`), ``acked[worker]`` the ledger increments whose save returned.
    """
    rng = random.Random(seed)
    configure(persistent, volatile, namespace=namespace)
    steps: dict[str, Callable[[], None]] = {
        "increment": lambda: _increment_depot(rng),
        "create": lambda: _create_depot(rng),
        "delete": lambda: _delete_depot(rng, abandon=False),
        "delete_abandon": lambda: _delete_depot(rng, abandon=True),
        "add_crate": lambda: _add_crate(rng),
        "move_crate": lambda: _move_crate(rng),
        "drop_crate": lambda: _drop_crate(rng),
        "read": lambda: _read(rng),
    }
    deadline = time.monotonic() + max_seconds
    for _ in range(max_ops):
        if stop.value or time.monotonic() > deadline:
            break
        index = rng.choices(range(len(OPS)), weights=WEIGHTS)[0]
        current_op[worker] = index
        try:
            if OPS[index] == "ledger":
                _increment_ledger(ledger_guid, worker, acked)
            else:
                steps[OPS[index]]()
        except EXPECTED:
            expected[worker] += 1
        except Exception:
            unexpected[worker] += 1
            _log(log_path, f"worker {worker} {OPS[index]}: unexpected\n{traceback.format_exc()}")
        progress[worker] += 1
    current_op[worker] = -1
    _log(log_path, f"worker {worker} done: {progress[worker]} operations")


def _increment_ledger(guid: str, worker: int, acked: Any) -> None:
    for _ in range(INCREMENT_TRIES):
        ledger = KillLedger(guid)
        ledger.count += 1
        try:
            ledger.save(datastore_wins=None)
        except ConcurrencyError:
            continue
        acked[worker] += 1  # a kill between the save's return and this line loses one ack: allowed for
        return
    raise RaceConditionError(f"the ledger kept conflicting {INCREMENT_TRIES} times")


def _cached_revision(context: Context, hybrid: str, guid: str) -> int | None:
    """Return the revision of the object's cached document (through dal's cache), or None."""
    payload = context.objects.get(context.keys.cached_doc(hybrid, guid))
    return None if payload is None else int(payload.partition(b" ")[0])


def targeted_writer(persistent: str, volatile: str, namespace: str, kind: str, depot_guid: str,
                    crate_guids: Sequence[str], state: Any, log_path: str) -> None:
    """Cache a depot (and its crates), then ``kind`` it and SIGKILL itself right after the commit.

    ``kind`` is ``save`` (an increment), ``delete`` or ``abandon`` (a delete abandoning its
    crates). The kill comes after ``context.persistent.commit`` returned ok and before
    ``dal.cache.journal.Journal.commit`` delivers the invalidations, so the old cached entries stay
    behind. ``state`` (see the slot names above) tells the parent what happened.
    """
    context = configure(persistent, volatile, namespace=namespace)
    state[STAGE] = CONFIGURED
    watched = [("depot", depot_guid)] + [("crate", guid) for guid in crate_guids]
    # load each object twice: the first load fills the cache, the second must find it there
    for attempt in range(50):
        Depot(depot_guid)
        depot = Depot(depot_guid)
        crates = [Crate(guid) for guid in crate_guids]
        crates = [Crate(guid) for guid in crate_guids]
        loaded = [depot._revision] + [crate._revision for crate in crates]
        cached = [_cached_revision(context, hybrid, guid) for hybrid, guid in watched]
        if cached == loaded:
            break
        _log(log_path, f"{kind}: attempt {attempt}: cached {cached} != loaded {loaded}; again")
        time.sleep(0.1)
    else:
        _log(log_path, f"{kind}: the objects never got cached")
        sys.exit(3)
    state[STAGE] = CACHED
    state[OLD_REVISION] = depot._revision
    doc_key = context.keys.doc("depot", depot_guid)
    store = context.persistent
    real_commit = store.commit

    def commit_then_die(checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        result = real_commit(checks, ops)
        touched = {op.key for op in ops if isinstance(op, Put | Delete)}
        if result.ok and doc_key in touched:
            # committed, invalidations not delivered: the old entries must still be cached
            still = [_cached_revision(context, hybrid, guid) for hybrid, guid in watched]
            state[STALE_AT_KILL] = sum(
                1 for revision, before in zip(still, loaded, strict=True) if revision == before)
            state[NEW_REVISION] = result.revision
            state[STAGE] = KILLING
            state[KILLED_AT] = time.monotonic()
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)  # the signal is delivered at once; never return from here
        return result

    store.commit = commit_then_die  # type: ignore[method-assign]  # the journal calls store.commit
    if kind == "save":
        depot = Depot(depot_guid)
        depot.count += 1
        depot.save()
    elif kind == "delete":
        Depot(depot_guid).delete()
    elif kind == "abandon":
        Depot(depot_guid).delete(abandon=["crates"])
    _log(log_path, f"{kind}: the operation returned without its commit being seen")
    sys.exit(4)


def fresh_reader(persistent: str, volatile: str, namespace: str, hmac_key: str, guid: str,
                 results: Any) -> None:
    """Load one Counter in a process that has never seen it; put (count, revision, stats) on ``results``."""
    context = configure(persistent, volatile, namespace=namespace, hmac_key=hmac_key)
    counter = Counter(guid)
    stats = context.stats.snapshot()
    results.put((counter.count, counter._revision, stats.get("object_hits", 0),
                 stats.get("object_stale", 0), stats.get("object_rejected", 0)))
    context.close()
