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
import re
import time
import traceback
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dal import configure
from dal.backends.memcached import replicated
from dal.cache.leases import LeasedCache
from dal.config import Context
from dal.exceptions import BackendError, CommitOutcomeUnknownError, ConcurrencyError
from dal.quorum import Kind, Outcome
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
    #: seconds after the go before the first operation, and after which none starts (0: no end)
    start: float = 0.0
    stop: float = 0.0
    #: no journal sweeps in this worker (nothing but its own reads and writes touches the cache)
    no_sweeps: bool = False
    #: a reader counts the votes in which this replicated-cache server (``host:port``) answered an
    #: entry of an older revision than another replica's (``behind`` in its ``votes``; ``alone``:
    #: its entry where the others answered a miss)
    watch: str = ""
    #: a reader's control: a vote whose replicas disagree is decided for the first one holding an entry
    first_held: bool = False


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


def _wait_for_go(plan: Plan, go: Any, stop: Any) -> bool:
    """Wait for the parent's go, then ``plan.start`` seconds (unless told to stop meanwhile)."""
    if not go.wait(timeout=max(0.0, plan.deadline - time.monotonic())):
        return False
    if plan.start:
        stop.wait(timeout=plan.start)
    return True


def _running(plan: Plan, stop: Any, done: int, until: float = float("inf")) -> bool:
    now = time.monotonic()
    return done < plan.max_ops and not stop.is_set() and now < plan.deadline and now < until


def _until(plan: Plan) -> float:
    """When this worker stops starting operations (``plan.stop`` after the go; no end if 0)."""
    return time.monotonic() - plan.start + plan.stop if plan.stop else float("inf")


def _revision(raw: bytes | None) -> int | None:
    """The revision in an unsigned object-cache entry (``<plain><V><revision> <document>``)."""
    found = None if raw is None else re.match(rb".V(\d+) ", raw, re.DOTALL)
    return None if found is None else int(found.group(1))


def _watch_votes(plan: Plan, tally: Tally[str]) -> None:
    """Count the votes in which ``plan.watch`` answered an older revision than another replica
    (``behind``) or an entry where the others missed (``alone``); in the control
    (``plan.first_held``), decide a disagreement for the first replica holding an entry, as a
    vote that trusts whatever it finds would."""
    real = replicated.vote

    def watching(asked: Sequence[str], replies: Mapping[str, bytes | None], needed: int) -> Outcome:
        mine = _revision(replies.get(plan.watch))
        others = [_revision(value) for name, value in replies.items() if name != plan.watch]
        if mine is not None and any(other is not None and other > mine for other in others):
            tally["behind"] += 1
        elif mine is not None and others and all(other is None for other in others):
            tally["alone"] += 1  # its entry, and misses elsewhere
        outcome = real(asked, replies, needed)
        held = [replies[name] for name in asked if replies.get(name) is not None]
        if plan.first_held and outcome.kind is Kind.DISAGREE and held:
            return Outcome(Kind.HIT, held[0], outcome.replies, outcome.unasked, ())
        return outcome

    replicated.vote = watching


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
        if plan.no_sweeps and context.sweeper is not None:
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
        if _wait_for_go(plan, go, stop):
            done, until = 0, _until(plan)
            while _running(plan, stop, done, until):
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
    votes: Tally[str] = Tally()
    results: dict[str, Any] = {"reads": reads, "votes": votes}
    errors: Tally[str] = Tally()
    try:
        _quiet()
        context = configure(plan.persistent, plan.volatile, namespace=plan.namespace)
        if (plan.sabotage or plan.no_sweeps) and context.sweeper is not None:
            context.sweeper.stop()
        if plan.watch:
            _watch_votes(plan, votes)
        for guid in plan.guids:
            if _load(guid, plan, errors) is None:
                raise TimeoutError(f"could not load counter {guid} before the deadline")
        ready.put(plan.process)
        if _wait_for_go(plan, go, stop):
            stats = context.stats
            done, until = 0, _until(plan)
            while _running(plan, stop, done, until):
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
