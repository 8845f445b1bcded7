"""Sweeps of the commit journal: what every process does in the background (``dal/cache/journal.py``).

Every :data:`SWEEP_INTERVAL` seconds a process:

- deletes its own records whose invalidations it delivered (those a commit did not take along);
- fences again its commits whose outcome is still unknown, until the store answers;
- with a shared cache, delivers again every record older than :data:`GRACE` (its writer
  normally deletes it within milliseconds, so an old one was left by a writer that died or could
  not reach the cache), and marks it swept with the revision it was applied at. Each page of
  records goes out in one batch, each server's share on its own; a record is marked only once
  every server got its part, and a replica that confirmed its part is not sent it again (with one
  replica of three dead, only the dead one is asked again at each sweep, not the live ones);
- catches up when some cache servers are not trusted (see ``dal/cache/leases.py``): probes them, and
  if any answers, delivers every record in the journal once more, then trusts again each
  server that answered and did not fail meanwhile;
- stamps markers with its clock and removes markers older than ``MARKER_AGE``.

A record is due when the time in its key is GRACE old by this process's clock, or when this
process has seen it for :data:`SEEN_SHARE` of GRACE on its own monotonic clock: the key holds
the writer's clock, and a writer whose clock runs ahead would otherwise keep its record young for
as long as it is ahead. Seeing a record takes reading the young ones too, so every sweep reads
the whole journal (normally the markers and the last fraction of a second of commits).
Delivering a record early costs a cache miss, never a stale read: the record exists only once
its commit applied, and an invalidation after the commit is what its writer sends too.

A process whose cache is its own (``memory://``) delivers nothing, so it never marks a record
either (it would take it from the processes with memcached): it only tidies markers. Its own
delivered records it deletes like any writer; a dead writer's record waits for a process with
memcached (in a deployment without one, it stays: a few hundred bytes per writer that died
between a commit and its invalidation, and per commit whose unknown outcome was learnt later).

Records a writer delivered are deleted by the same thread every :data:`FLUSH_EVERY` seconds (or
along with the writer's next commit), well before GRACE, so sweeps do not redeliver them.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable

from dal.backends.base import Delete, Entry, Put, Revision
from dal.cache.journal import (
    CANCELLED,
    FLUSH_AFTER,
    MARKER_AGE,
    RECORD,
    RESOLVE_WINDOW,
    SWEPT,
    Journal,
    Outcome,
    marker_time,
)
from dal.exceptions import BackendError
from dal.keys import Keys, is_flight_lock

#: jitter drawn from a generator of dal's own: a library must not advance the application's
#: global random sequence, which a seeded program relies on; reseeded in a forked child, so
#: that processes forked from one parent do not jitter in step
_jitter = random.Random()
os.register_at_fork(after_in_child=_jitter.seed)

log = logging.getLogger(__name__)

#: seconds a record may stay before any process delivers it again
GRACE = 0.5
#: seconds between two sweeps of the journal by one process (jittered by 20%)
SWEEP_INTERVAL = 0.5
#: records read per page by a sweep
SWEEP_PAGE = 64
#: seconds between two flushes of this process's delivered records (FLUSH_AFTER + this < GRACE)
FLUSH_EVERY = 0.1
#: share of GRACE for which one of this process's sweeps must have seen a record before it is due,
#: whatever time its key says: GRACE less the sweeps' jitter, so one seen at a sweep is due at the
#: next. A share of GRACE, not a figure of its own, so that GRACE alone says how long a live
#: writer has to deliver and delete its record (a test that lengthens it stops both ways)
SEEN_SHARE = 0.8


class Sweep:
    """One process's background work on the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.cache = journal.cache
        # reads bypass later monkeypatching of the store (tests count a save's round trips)
        self._scan = journal.store.scan
        #: record key -> cache servers this process already delivered it to (a server that
        #: confirmed a delete applied it: it need not get it again, even after a failure)
        self._sent: dict[str, set[str]] = {}
        #: record key -> this process's monotonic clock when one of its sweeps first saw it
        self._first_seen: dict[str, float] = {}
        #: one sweep at a time (the first read's catch-up and the thread's may meet)
        self._lock = threading.Lock()
        #: one catch-up at a time: a second one's clear of a restarted server (see _catch_up) would
        #: remove what readers filled after the first trusted it
        self._catching = threading.Lock()
        restarts = getattr(self.cache.store, "restarts", None)  # see dal/backends/redis/restarts.py
        if restarts is not None:
            restarts.refused = lambda: self.cache.trust.fail(self.cache.store.nodes())

    def flush(self) -> None:
        """Delete this process's delivered records that waited FLUSH_AFTER."""
        try:
            self.journal.flush(FLUSH_AFTER)
        except BackendError as exc:
            log.debug("journal flush failed: %s", exc)

    def tick(self) -> None:
        """Do one round: flush, fence unknown outcomes, catch up or sweep."""
        try:
            self.journal.flush(FLUSH_AFTER)
            self._fence_unknown()
            if not (self.journal.delivers and self.cache.trust.lost and self._catch_up()):
                self.sweep()
        except BackendError as exc:  # the store or the cache is unreachable: try next time
            log.debug("journal sweep failed: %s", exc)

    def catch_up(self) -> None:
        """Catch up now (the first cache read of a process does, rather than wait for a tick)."""
        try:
            self._catch_up()
        except BackendError as exc:
            log.debug("journal catch-up failed: %s", exc)

    def _catch_up(self) -> bool:
        """Probe untrusted servers; if any answers, deliver everything and trust those that did."""
        with self._catching:
            return bool(not self.cache.trust.lost or self._catch_up_now())

    def _catch_up_now(self) -> bool:
        trust = self.cache.trust
        started = time.monotonic()
        # a server that started again with its data may hold entries whose deletes it had confirmed
        # before (dal/backends/redis/restarts.py): those go before it is trusted. Its connections
        # may reach any start of it meanwhile (reads go around it: it is not trusted)
        settle = getattr(self.cache.store, "settle_restart", None)
        restarts = getattr(self.cache.store, "restarts", None)
        if restarts is not None:
            restarts.suspend()
        answered = self.cache.probe(self.journal.keys.cache_root + "probe/", list(trust.lost))
        if not answered:
            return False
        keys, settled = self.journal.keys, None
        if settle is not None:
            settled = settle(keys.cache_incarnation(), keys.cache_root, _kept_by_restart_clear(keys))
        if settled == "restarted":
            self.journal.stats.add("object_restart_clears")
            log.warning("the cache server restarted since this namespace's entries were last checked: "
                        "they were removed, since it may have brought back ones already invalidated")
        elif settled == "unmarked":
            log.debug("the cache server held no mark of this namespace's entries: removed them once")
        complete, failed = self.sweep(everything=True)
        if complete and trust.restore(answered - failed, started):
            self.journal.stats.add("object_trust_restored")
        return True

    def _fence_unknown(self) -> None:
        for uncertain in list(self.journal.unknown.values()):
            if time.time() - uncertain.stamp > RESOLVE_WINDOW:
                self.journal.give_up(uncertain)
                continue
            outcome, _ = self.journal.resolve(uncertain, budget=0)
            if outcome is Outcome.APPLIED:
                # deliver, but leave the record: its object may still settle through it (a sweep
                # marks it, with its revision, and the mark stays MARKER_AGE)
                self.cache.invalidate(*self.journal.decode(uncertain.record), recorded=True)

    def sweep(self, *, everything: bool = False) -> tuple[bool, set[str]]:
        """Go through the journal once; return whether all of it was read, and the servers that failed.

        Records older than GRACE (every record, with ``everything``) are delivered, when this
        process delivers.
        """
        with self._lock:
            return self._sweep(everything)

    def _sweep(self, everything: bool) -> tuple[bool, set[str]]:
        now = time.time()
        cutoff = now - GRACE
        clock = time.monotonic()
        again = SEEN_SHARE * GRACE
        failed: set[str] = set()
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            # to the end, young records included: one stamped ahead of this clock is aged from
            # when this process first saw it
            page = self._scan(self.journal.keys.journal(), start_after=cursor, limit=SWEEP_PAGE)
            records: list[tuple[str, Entry, bool]] = []
            for key, entry in page:
                try:
                    stamp = Keys.journal_stamp(key)
                except (ValueError, IndexError):
                    continue  # not a journal record: something else wrote it, not ours to touch
                seen.add(key)
                if entry.value[:1] != RECORD:
                    self._tidy_marker(key, entry, now)
                    continue
                if not self.journal.delivers:
                    continue  # a cache of our own cannot take it: it waits for a shared-cache process
                first = self._first_seen.setdefault(key, clock)
                due = stamp <= cutoff or clock - first >= again
                if due or everything:
                    records.append((key, entry, due))
            if records:
                failed |= self._deliver(records, failed, now)
            if len(page) < SWEEP_PAGE:
                for sent in [key for key in self._sent if key not in seen]:
                    del self._sent[sent]  # gone from the journal: forget it
                for known in [key for key in self._first_seen if key not in seen]:
                    del self._first_seen[known]
                return True, failed
            cursor = page[-1][0]

    def _deliver(self, records: list[tuple[str, Entry, bool]], failed: set[str],
                 now: float) -> set[str]:
        """Deliver a page of records in one batch; mark those every server got. Return new failures."""
        # a key's holders: its server, or each of its replicas. A record's key is owed to each
        # holder that did not confirm it yet for that record (:attr:`_sent`), so with one replica
        # dead the live ones are not sent its records again every sweep; it is sent while any of
        # those has not failed in this sweep (a server left out of ``failed`` got every key it holds)
        holders = self.cache.placement.holders
        todo: list[tuple[str, Entry, bool, set[str]]] = []
        owed: dict[str, set[str]] = {}
        for key, entry, due in records:
            sent = self._sent.get(key, set())
            servers: set[str] = set()
            for k in self.journal.decode(entry.value):
                missing = set(holders(k)) - sent
                servers |= missing
                owed.setdefault(k, set()).update(missing)
            todo.append((key, entry, due, servers))
        wanted = {k: servers for k, servers in owed.items() if servers and not failed.issuperset(servers)}
        failing = self._send(wanted, failed) if wanted else set()
        failed = failed | failing
        for key, entry, due, servers in todo:
            self._sent.setdefault(key, set()).update(servers - failed)
            if servers & failed:
                continue  # a server did not get its part: keep the record for the next sweep
            self._sent.pop(key, None)
            self.journal.stats.add("journal_delivered")
            if self.journal.claim_undelivered(key):
                self.journal.queue_done([key])  # delivered at last: delete it as its writer
            elif due:  # a young one (a catch-up delivers everything) is its live writer's to delete
                self._mark(key, entry, now)
        return failing

    def _send(self, owed: dict[str, set[str]], failed: set[str]) -> set[str]:
        """Delete each key on the servers it is owed to; return the servers that did not confirm.

        A key owed to all its holders goes through the cache's delivery, which stops trusting a
        server that fails and says so once. One owed to some replicas only (a replicated store's
        ``delete_on``) goes to those alone, less the servers that failed in this sweep: each failed
        to take it before, in this process, and is untrusted since (it is trusted again only once a
        sweep delivered it this record), so a failure again needs no new warning.
        """
        holders = self.cache.placement.holders
        delete_on = getattr(self.cache.store, "delete_on", None)
        shares: dict[str, list[str]] = {}
        everywhere: list[str] = []
        for k, servers in owed.items():
            if delete_on is None or servers.issuperset(holders(k)):
                everywhere.append(k)
            else:
                for server in servers - failed:
                    shares.setdefault(server, []).append(k)
        failing = set(self.cache.deliver_each(everywhere)) if everywhere else set()
        if shares and delete_on is not None:
            try:
                missed = set(delete_on(shares))
            except BackendError:  # the store failed as a whole
                missed = set(shares)
            if missed:
                self.cache.stats.add(f"{self.cache.prefix}invalidation_errors")
                self.cache.trust.fail(sorted(missed))
            failing |= missed
        return failing

    def _mark(self, key: str, entry: Entry, now: float) -> None:
        """Mark a record swept, with the revision it was applied at, unless it changed meanwhile."""
        marker = SWEPT + f"{entry.revision} {_stamp(now)}".encode()
        self._conditionally(key, entry, Put(key, marker))

    def _tidy_marker(self, key: str, entry: Entry, now: float) -> None:
        """Delete our own marked records, stamp new cancellations, remove markers past their age."""
        if self.journal.claim_undelivered(key):  # another process delivered it for us: we delete it
            self.journal.queue_done([key])
            return
        stamped = marker_time(entry.value)
        if stamped is None:  # written by a writer (a fence, a settled save): age it from now on
            kind, revision = entry.value[:1], entry.value[1:].partition(b" ")[0]
            stamp = _stamp(now)
            suffix = stamp if kind == CANCELLED else f"{(revision or b'0').decode()} {stamp}"
            self._conditionally(key, entry, Put(key, kind + suffix.encode()))
        elif now - stamped > MARKER_AGE:
            self._conditionally(key, entry, Delete(key))

    def _conditionally(self, key: str, entry: Entry, op: Put | Delete) -> None:
        # one commit per marker: they are few, and one conflict must not hold the others back
        self.journal.store.commit([Revision(key, entry.revision)], [op])


def _kept_by_restart_clear(keys: Keys) -> Callable[[str], bool]:
    """Tell which keys a restart's clear keeps: none holds cached data, so none can be stale. The
    single-flight locks (removing one lets a second caller compute) and the published statistics
    (removing them loses every earlier process's counts from ``dal stats``)."""
    statistics = keys.published_stats()
    return lambda key: is_flight_lock(key) or key.startswith(statistics)


def _stamp(now: float) -> str:
    """``now`` in milliseconds, rounded down: a stamp is never later than the moment it records.

    Rounded to nearest, a stamp could lie half a millisecond in the future, and a sweep right after
    would find the marker younger than it is (``MARKER_AGE`` 0 kept it: a flaky test showed it).
    """
    return f"{math.floor(now * 1000) / 1000:.3f}"


class Sweeper:
    """A daemon thread running :meth:`Sweep.tick` every SWEEP_INTERVAL, and a flush at exit."""

    def __init__(self, sweep: Sweep, interval: float = SWEEP_INTERVAL) -> None:
        self.sweep = sweep
        self.interval = interval
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="dal-journal", daemon=True)
        atexit.register(self.stop)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.sweep.tick()
            except Exception:  # a bug must not stop the sweeps: they are what bounds staleness
                log.exception("journal sweep failed")
            # between two sweeps, flush this process's delivered records often, so that no
            # other process's sweep finds them older than GRACE
            next_tick = time.monotonic() + self.interval * _jitter.uniform(0.8, 1.2)
            while (pause := next_tick - time.monotonic()) > 0:
                if self._stop.wait(min(FLUSH_EVERY, pause)):
                    return
                self.sweep.flush()

    def stop(self) -> None:
        """Stop sweeping and delete this process's delivered records."""
        if os.getpid() != self._pid:
            return  # inherited over fork: the parent's journal is not ours to touch
        self._stop.set()
        atexit.unregister(self.stop)
        try:
            self.sweep.journal.flush()
        except Exception:  # at exit, a store may already be gone: the records are swept later
            log.debug("could not flush the journal", exc_info=True)

