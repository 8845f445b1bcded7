"""Worker processes of test_cache_faults.py: counter writers and readers that record timed histories.

They are started with multiprocessing's "spawn" context, so everything here is module level.
Each worker configures dal itself, warms up (its first loads), reports ready, waits for the
parent's go, works until the parent's stop (or its own hard deadline, or its operation budget),
then writes its results as JSON to ``plan.out`` and exits. Times are ``time.monotonic()``, one
clock for every process of the machine.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any

from dal import configure
from dal.cache.leases import LeasedCache
from dal.config import Context
from dal.exceptions import BackendError, CommitOutcomeUnknownError, ConcurrencyError
from faults.fault_hybrids import Counter

#: seconds a writer sleeps after a BackendError before calling save() again
BACKEND_PAUSE = 0.05


@dataclass(frozen=True)
class Plan:
    """What one worker does, and where it writes its results."""

    persistent: str
    volatile: str
    namespace: str
    guids: tuple[str, ...]
    out: str
    #: ``time.monotonic()`` after which the worker stops, whatever the parent says
    deadline: float
    process: int = 0
    #: operations (increments or reads) at most
    max_ops: int = 1_000_000
    #: seconds between two operations
    pace: float = 0.0
    #: the control run: no invalidations from the writer, no journal sweeps anywhere
    sabotage: bool = False
    #: the writer records every delete_many sent to the volatile store and what failed
    spy_deletes: bool = False


def _no_invalidation(self: LeasedCache, *keys: str, recorded: bool = False) -> list[str]:
    """Stand-in for LeasedCache.invalidate in the control run: delete nothing, report success."""
    return []


def _served_by_cache(before: dict[str, float], after: dict[str, float]) -> bool:
    """Tell whether a load was a cache hit that was used (not refused as older than one seen)."""
    def grew(name: str) -> bool:
        return after.get(name, 0) > before.get(name, 0)

    return grew("object_hits") and not grew("object_stale") and not grew("object_unsure")


def _quiet() -> None:
    """Keep expected warnings (invalidations to resend while memcached is down) out of the output."""
    logging.getLogger("dal").setLevel(logging.ERROR)


def _wait_for_go(plan: Plan, go: Any) -> bool:
    return bool(go.wait(timeout=max(0.0, plan.deadline - time.monotonic())))


def _running(plan: Plan, stop: Any, done: int) -> bool:
    return done < plan.max_ops and not stop.is_set() and time.monotonic() < plan.deadline


def _finish(plan: Plan, context: Context | None, results: dict[str, Any]) -> None:
    if context is not None:
        results["stats"] = context.stats.snapshot()
    temporary = plan.out + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(results, handle)
    os.replace(temporary, plan.out)
    if context is not None:
        context.close()


def _load(guid: str, plan: Plan, errors: Tally[str]) -> Counter | None:
    """Load a counter, retrying store failures until the deadline."""
    while time.monotonic() < plan.deadline:
        try:
            return Counter(guid)
        except BackendError:
            errors["load_errors"] += 1
            time.sleep(BACKEND_PAUSE)
    return None


def _increment(counters: dict[str, Counter], guid: str, plan: Plan,
               errors: Tally[str]) -> tuple[int, float] | None:
    """Add one to a counter with dal's documented recipe; return (stored value, when save returned).

    ``None`` when the deadline passed first (the increment is then unfinished: maybe applied).
    """
    counter = counters[guid]
    counter.count += 1
    while time.monotonic() < plan.deadline:
        try:
            counter.save(datastore_wins=None)
        except ConcurrencyError:
            errors["conflicts"] += 1
            reloaded = _load(guid, plan, errors)
            if reloaded is None:
                return None
            counter = counters[guid] = reloaded
            counter.count += 1
            continue
        except CommitOutcomeUnknownError:
            errors["outcome_unknown"] += 1
            continue  # the same object: save() learns the earlier commit's outcome first
        except BackendError:
            errors["backend_errors"] += 1
            time.sleep(BACKEND_PAUSE)
            continue
        return counter.count, time.monotonic()
    return None


def writer(plan: Plan, ready: Any, go: Any, stop: Any) -> None:
    """Increment the plan's counters in turn; record (value, returned) for every save that returned."""
    context: Context | None = None
    results: dict[str, Any] = {"writes": {guid: [] for guid in plan.guids}}
    errors: Tally[str] = Tally()
    try:
        _quiet()
        context = configure(plan.persistent, plan.volatile, namespace=plan.namespace)
        if plan.sabotage:
            LeasedCache.invalidate = _no_invalidation  # type: ignore[method-assign]
            if context.sweeper is not None:
                context.sweeper.stop()
        deletes: list[tuple[float, list[str], list[str]]] = []
        if plan.spy_deletes:
            volatile = context.volatile
            real = volatile.delete_many

            def spying(keys: list[str]) -> list[str]:
                failed = real(keys)
                deletes.append((time.monotonic(), list(keys), list(failed)))
                return failed

            volatile.delete_many = spying  # type: ignore[method-assign]
        counters = {}
        for guid in plan.guids:
            loaded = _load(guid, plan, errors)
            if loaded is None:
                raise TimeoutError(f"could not load counter {guid} before the deadline")
            counters[guid] = loaded
        ready.put(plan.process)
        unfinished: list[str] = []
        if _wait_for_go(plan, go):
            done = 0
            while _running(plan, stop, done):
                guid = plan.guids[done % len(plan.guids)]
                done += 1
                outcome = _increment(counters, guid, plan, errors)
                if outcome is None:
                    unfinished.append(guid)
                    break
                results["writes"][guid].append(outcome)
                if plan.pace:
                    time.sleep(plan.pace)
        results["unfinished"] = unfinished
        if plan.spy_deletes:
            results["deletes"] = list(deletes)  # a copy: the sweeper thread may still append
    except Exception:
        results["error"] = traceback.format_exc()
    results["errors"] = dict(errors)
    _finish(plan, context, results)


def reader(plan: Plan, ready: Any, go: Any, stop: Any) -> None:
    """Load the plan's counters in turn; record [counter index, value, began, ended, cache hit]."""
    context: Context | None = None
    reads: list[tuple[int, int, float, float, bool]] = []
    results: dict[str, Any] = {"reads": reads}
    errors: Tally[str] = Tally()
    try:
        _quiet()
        context = configure(plan.persistent, plan.volatile, namespace=plan.namespace)
        if plan.sabotage and context.sweeper is not None:
            context.sweeper.stop()
        for guid in plan.guids:
            if _load(guid, plan, errors) is None:
                raise TimeoutError(f"could not load counter {guid} before the deadline")
        ready.put(plan.process)
        if _wait_for_go(plan, go):
            stats = context.stats
            done = 0
            while _running(plan, stop, done):
                index = done % len(plan.guids)
                done += 1
                before = stats.snapshot()
                began = time.monotonic()
                try:
                    value = Counter(plan.guids[index]).count
                except BackendError:
                    errors["read_errors"] += 1
                    time.sleep(BACKEND_PAUSE)
                    continue
                ended = time.monotonic()
                reads.append((index, value, began, ended, _served_by_cache(before, stats.snapshot())))
                if plan.pace:
                    time.sleep(plan.pace)
    except Exception:
        results["error"] = traceback.format_exc()
    results["errors"] = dict(errors)
    _finish(plan, context, results)
