"""The commit journal: every commit names itself and records the cache keys it invalidates.

Two problems share one answer.

*A lost answer.* etcd can apply a transaction and lose the answer (the connection drops, the
deadline passes). Resent, the transaction fails its revision checks, because the first send
went through; a save would then report a conflict for its own write. So every commit also
writes a journal record under a fresh random key, checked absent in the same transaction. If a
failed commit reports that key present, the commit was applied earlier: it is ours, nobody else
knows the key. When no answer comes at all, the writer *fences* its record: it commits a
"cancelled" marker under the key, conditional on the key being absent. If that succeeds, the
original can never apply (its own check would fail); if it fails on our record, the original
applied. Only when even the fence gets no answer before the deadline is the outcome unknown:
:class:`~dal.exceptions.CommitOutcomeUnknownError`.

*A writer killed after its commit and before its invalidation.* The record holds the cache keys
the commit invalidates, and is durable with the commit. The writer delivers them after the
commit and then deletes its record (batched into its next commit, or flushed when idle). Every
process sweeps the journal every :data:`SWEEP_INTERVAL` seconds: a record older than
:data:`GRACE` is delivered again and retired, so a dead writer's invalidations arrive within
about ``GRACE + SWEEP_INTERVAL`` seconds while any process of that namespace runs.

Records live at ``<namespace>/x/<milliseconds>/<token>``. Values:

- ``R<key>\\n<key>...``: a commit's record (cache keys relative to the namespace's cache root);
- ``S``: swept, its invalidations delivered by a sweep; kept a while so a writer still learning
  its commit's outcome finds the key present;
- ``C``: cancelled by its writer's fence: that commit was never applied.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from dal.backends.base import Check, CommitResult, Delete, Op, PersistentStore, Put, Revision
from dal.cache import LeasedCache, Stats
from dal.exceptions import BackendError, CommitOutcomeUnknownError
from dal.keys import Keys

log = logging.getLogger(__name__)

RECORD, SWEPT, CANCELLED = b"R", b"S", b"C"
#: seconds a record may stay before any process delivers it again (its writer normally deletes it
#: within milliseconds)
GRACE = 0.5
#: seconds between two sweeps of the journal by one process (jittered by 20%)
SWEEP_INTERVAL = 0.5
#: seconds a delivered record waits to be deleted along with a later commit before it is flushed
FLUSH_AFTER = 0.2
#: delivered records deleted along with one commit, when that commit is small
PIGGYBACK = 16
#: checks plus operations below which a commit takes delivered records along
PIGGYBACK_ROOM = 48
#: records read per page by a sweep, and retired per commit
SWEEP_PAGE = 64
#: seconds after which a writer no longer trusts the absence of its record (a sweep may have
#: retired it), so an outcome still unknown by then stays unknown
RESOLVE_WINDOW = 30.0
#: seconds a swept or cancelled marker is kept: RESOLVE_WINDOW plus a wide margin for clocks
TOMBSTONE_AGE = 300.0


class Outcome(Enum):
    """What became of a commit whose answer was lost."""

    APPLIED = "applied"
    NOT_APPLIED = "not applied"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Uncertain:
    """A commit whose outcome could not be learnt: enough to learn it later."""

    key: str
    record: bytes
    stamp: float


class Journal:
    """Commit through the journal, learn lost outcomes, and sweep other writers' records."""

    def __init__(self, store: PersistentStore, keys: Keys, cache: LeasedCache, stats: Stats) -> None:
        self.store = store
        self.keys = keys
        self.cache = cache
        self.stats = stats
        self._lock = threading.Lock()
        #: records whose invalidations were delivered, with when: to delete
        self._done: list[tuple[str, float]] = []
        #: this process's records whose invalidations have not been delivered yet
        self._undelivered: set[str] = set()
        # the sweep's reads bypass later monkeypatching of the store (tests count round trips)
        self._scan = store.scan

    # --- committing -------------------------------------------------------------------------

    def commit(self, checks: Sequence[Check], ops: Sequence[Op], invalidate: Sequence[str]) -> CommitResult:
        """Commit ``ops`` if ``checks`` hold, with a record of ``invalidate``; deliver it after.

        A failed result never comes from this commit's own earlier send. Raises BackendError
        when the commit was certainly not applied, CommitOutcomeUnknownError when that could
        not be learnt.
        """
        stamp = time.time()
        key = self.keys.journal_record(stamp, os.urandom(8).hex())
        record = self._encode(invalidate)
        along = self._take_done(len(checks) + len(ops))
        sent_checks = [*checks, Revision(key, 0)]
        sent_ops = [*ops, Put(key, record), *(Delete(done) for done in along)]
        try:
            result = self.store.commit(sent_checks, sent_ops)
        except BackendError as exc:
            outcome, revision = self.resolve(Uncertain(key, record, stamp))
            if outcome is not Outcome.APPLIED:
                self._give_back(along)
                # whatever happened, nothing this commit touched may stay cached
                self.cache.invalidate(*invalidate)
                said = str(exc).rstrip(". ") + "."
                if outcome is Outcome.NOT_APPLIED:
                    raise BackendError(f"{said} Nothing was written: retrying is safe.") from exc
                raise CommitOutcomeUnknownError(
                    f"{said} The commit was sent and may have been applied; dal could not learn which "
                    f"within {self._budget():g} s. Call save() again on the same object: it first finds "
                    "out whether this commit was applied, and never applies it twice (or reload the "
                    "object and look before retrying).", Uncertain(key, record, stamp)) from exc
            result = CommitResult(ok=True, revision=revision)
        else:
            if not result.ok:
                token = len(checks)
                if token not in result.failed:
                    self._give_back(along)
                    return result
                # our record is there: an earlier send of this very commit was applied
                self.stats.add("commit_answers_lost")
                entry = result.current[key]
                result = CommitResult(ok=True, revision=entry.revision if entry.value == record else 0)
        self._delivered(key, invalidate)
        return result

    def resolve(self, uncertain: Uncertain) -> tuple[Outcome, int]:
        """Learn whether an uncertain commit was applied, and at which revision (0: not known).

        Fences the commit: a conditional write of a "cancelled" marker under its record's key
        either lands (the commit was not applied and now never will be) or fails on the record
        (it was). Retried until the store's timeout passes.
        """
        deadline = time.monotonic() + self._budget()
        pause = 0.01
        while True:
            if time.time() - uncertain.stamp > RESOLVE_WINDOW:
                return Outcome.UNKNOWN, 0  # a sweep may have retired the record by now
            try:
                fence = self.store.commit([Revision(uncertain.key, 0)], [Put(uncertain.key, CANCELLED)])
            except BackendError:
                if time.monotonic() + pause >= deadline:
                    return Outcome.UNKNOWN, 0
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            entry = fence.current.get(uncertain.key)
            if fence.ok or (entry is not None and entry.value == CANCELLED):
                self._queue_done([uncertain.key])
                return Outcome.NOT_APPLIED, 0
            if entry is None:  # cannot happen: the check failed, so the key exists; ask again
                continue
            self.stats.add("commit_answers_lost")
            return Outcome.APPLIED, entry.revision if entry.value == uncertain.record else 0

    def settled(self, uncertain: Uncertain, invalidate: Sequence[str]) -> None:
        """Deliver the invalidations of an uncertain commit found applied later."""
        self._delivered(uncertain.key, invalidate)

    def _budget(self) -> float:
        return max(float(self.store.timeout), 1.0)

    def _encode(self, invalidate: Sequence[str]) -> bytes:
        root = self.keys.cache_root
        return RECORD + "\n".join(key.removeprefix(root) for key in invalidate).encode()

    def _decode(self, value: bytes) -> list[str]:
        root = self.keys.cache_root
        return [root + key for key in value[1:].decode().split("\n") if key] if len(value) > 1 else []

    # --- retiring records -------------------------------------------------------------------

    def _delivered(self, key: str, invalidate: Sequence[str]) -> None:
        """Deliver a committed record's invalidations; queue the record for deletion if they landed."""
        if self.cache.invalidate(*invalidate):
            with self._lock:
                self._undelivered.add(key)  # stays in the journal: a sweep delivers it
        else:
            self._queue_done([key])

    def _queue_done(self, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            self._done += [(key, now) for key in keys]

    def _take_done(self, size: int) -> list[str]:
        if not self._done or size > PIGGYBACK_ROOM:
            return []
        with self._lock:
            taken, self._done = self._done[:PIGGYBACK], self._done[PIGGYBACK:]
        return [key for key, _ in taken]

    def _give_back(self, keys: list[str]) -> None:
        if keys:
            now = time.monotonic()
            with self._lock:
                self._done = [(key, now) for key in keys] + self._done

    def flush(self, older_than: float = 0.0) -> None:
        """Delete queued records that waited ``older_than`` seconds (all of them by default)."""
        limit = time.monotonic() - older_than
        with self._lock:
            due = [key for key, when in self._done if when <= limit][:SWEEP_PAGE]
            chosen = set(due)
            self._done = [(key, when) for key, when in self._done if key not in chosen]
        if not due:
            return
        try:
            self.store.commit([], [Delete(key) for key in due])
        except BackendError:
            self._give_back(due)  # deleting twice is harmless: retry later

    # --- sweeping ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Do one round of background work: flush deletions, sweep, restore trust in the cache."""
        self.flush(FLUSH_AFTER)
        if self.cache.trust.trusted:
            self.sweep()
        else:
            self.catch_up()

    def catch_up(self) -> None:
        """Trust again each untrusted server that answers and got every recorded invalidation again.

        The journal's records hold every invalidation that may have missed the cache while this
        process did not watch it (before it started, or while it could not reach a server).
        """
        trust = self.cache.trust
        started = time.monotonic()
        answered = self.cache.probe(self.keys.cache_root + "probe/", list(trust.lost))
        if not answered:
            return
        complete, failed = self.sweep(everything=True)
        if complete and trust.restore(answered - failed, started):
            self.stats.add("object_trust_restored")

    def sweep(self, *, everything: bool = False) -> tuple[bool, set[str]]:
        """Deliver the invalidations of records older than GRACE (all, with ``everything``).

        Each page of records is delivered in one batch (each server's share on its own); a
        server that fails is not asked again in this sweep, and a record is retired only once
        every server got its part. Return whether the whole journal was read, and the servers
        that failed: a server that lost contact may be trusted again only after a complete
        sweep it did not fail.
        """
        now = time.time()
        cutoff = now - GRACE
        node = self.cache.store.node
        failed: set[str] = set()
        retire: list[tuple[str, int, bytes | None]] = []  # key, revision, new value (None: delete)
        cursor: str | None = None
        try:
            while True:
                page = self._scan(self.keys.journal(), start_after=cursor, limit=SWEEP_PAGE)
                records: list[tuple[str, int, float, list[str]]] = []
                young = False
                for key, entry in page:
                    stamp = Keys.journal_stamp(key)
                    if stamp > cutoff and not everything:
                        young = True
                        break
                    if entry.value[:1] == RECORD:
                        records.append((key, entry.revision, stamp, self._decode(entry.value)))
                    elif now - stamp > TOMBSTONE_AGE:
                        retire.append((key, entry.revision, None))
                wanted = list(dict.fromkeys(cache_key for *_, keys in records for cache_key in keys))
                if failed:
                    wanted = [cache_key for cache_key in wanted if node(cache_key) not in failed]
                if wanted:
                    failed |= {node(cache_key) for cache_key in self.cache.deliver(wanted)}
                for key, revision, stamp, keys in records:
                    if failed and any(node(cache_key) in failed for cache_key in keys):
                        continue  # a server did not get its part: keep the record for the next sweep
                    self.stats.add("journal_delivered")
                    with self._lock:
                        ours = key in self._undelivered
                        self._undelivered.discard(key)
                    if ours:
                        self._queue_done([key])
                    elif stamp <= cutoff:
                        # kept as a marker while its writer may still be learning the outcome
                        retire.append((key, revision, None if now - stamp > TOMBSTONE_AGE else SWEPT))
                if young or len(page) < SWEEP_PAGE:
                    return True, failed
                cursor = page[-1][0]
        except BackendError as exc:
            log.debug("journal sweep failed: %s", exc)
            return False, failed
        finally:
            self._retire(retire)

    def _retire(self, retire: list[tuple[str, int, bytes | None]]) -> None:
        """Mark or delete swept records, each only if no one else changed it meanwhile."""
        for start in range(0, len(retire), SWEEP_PAGE // 2):
            chunk = retire[start:start + SWEEP_PAGE // 2]
            checks: list[Check] = [Revision(key, revision) for key, revision, _ in chunk]
            ops: list[Op] = [Delete(key) if value is None else Put(key, value) for key, _, value in chunk]
            try:
                self.store.commit(checks, ops)  # a conflict means another process did it
            except BackendError as exc:
                log.debug("could not retire swept journal records: %s", exc)
                return


class Sweeper:
    """A daemon thread running :meth:`Journal.tick` every SWEEP_INTERVAL, and a flush at exit."""

    def __init__(self, journal: Journal, interval: float = SWEEP_INTERVAL) -> None:
        self.journal = journal
        self.interval = interval
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="dal-journal", daemon=True)
        atexit.register(self.stop)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.journal.tick()
            except Exception:  # a bug must not stop the sweeps: they are what bounds staleness
                log.exception("journal sweep failed")
            if self._stop.wait(self.interval * random.uniform(0.8, 1.2)):
                return

    def stop(self) -> None:
        """Stop sweeping and delete this process's delivered records."""
        if os.getpid() != self._pid:
            return  # inherited over fork: the parent's journal is not ours to touch
        self._stop.set()
        atexit.unregister(self.stop)
        try:
            self.journal.flush()
        except Exception:  # at exit, a store may already be gone: the records are swept later
            log.debug("could not flush the journal", exc_info=True)
