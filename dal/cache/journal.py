"""The commit journal: every commit names itself and records the cache keys it invalidates.

Two problems share one answer.

*A lost answer.* etcd can apply a transaction and lose the answer (the connection drops, the
deadline passes). Resent, the transaction fails its revision checks, because the first send
went through; a save would then report a conflict for its own write. So every commit also
writes a journal record under a fresh random key, checked absent in the same transaction. If a
failed commit reports that key present, the commit was applied earlier: it is ours, nobody else
knows the key. When no answer comes at all, the writer *fences* its record: it commits a
"cancelled" marker under the key, conditional on the key being absent. If that succeeds, the
original can never apply while the marker stays (its own check would fail), and markers stay
:data:`MARKER_AGE` seconds; if it fails on our record, the original applied. A conflict answered to
a resend (etcd's client sends a commit a member did not answer to another one) is fenced the same
way: the unanswered send would apply once the checks it failed hold again. Only when even the
fence gets no answer before the deadline is the outcome unknown:
:class:`~dal.exceptions.CommitOutcomeUnknownError`; the writer's sweeps keep fencing it until
the store answers. A store that cannot lose answers (a local SQLite file) is never fenced: its
failed commit is rolled back.

*A writer killed after its commit and before its invalidation.* The record holds the cache keys
the commit invalidates, and is durable with the commit. The writer delivers them after the
commit and then deletes its record (along with its next commit, or flushed when idle). Every
process with a shared cache sweeps the journal (``dal/cache/sweeps.py``): a record older than
``GRACE`` is delivered again and marked swept, so a dead writer's invalidations arrive within
about a second while any process of that namespace runs.

Records live at ``<namespace>/x/<milliseconds>/<token>``. Values:

- ``R<key>\\n<key>...``: a commit's record (cache keys relative to the namespace's cache root);
- ``S<revision> <time>``: swept: the commit (applied at ``revision``) had its invalidations
  delivered by a sweep at ``time`` (the sweeper's clock); kept so a writer still learning its
  commit's outcome finds the key present, and its revision;
- ``C`` then ``C<time>``: cancelled by its writer's fence, that commit was never applied; a
  sweep stamps the time it first saw it, and removes it :data:`MARKER_AGE` seconds later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    Entry,
    Evict,
    EvictingStore,
    Op,
    PersistentStore,
    Put,
    RefusedError,
    Revision,
    TooLargeError,
)
from dal.cache.counters import Stats
from dal.cache.leases import LeasedCache
from dal.exceptions import BackendError, CommitOutcomeUnknownError
from dal.keys import Keys

log = logging.getLogger(__name__)

RECORD, SWEPT, CANCELLED = b"R", b"S", b"C"
#: seconds a delivered record waits to be deleted along with a later commit before it is flushed
FLUSH_AFTER = 0.2
#: delivered records deleted along with one commit, when that commit is small
PIGGYBACK = 16
#: checks plus operations below which a commit takes delivered records along
PIGGYBACK_ROOM = 48
#: records deleted per flush commit
FLUSH_BATCH = 64
#: seconds a swept or cancelled marker is kept, by the clock of the sweeper that stamped it: a copy
#: of a fenced commit still travelling cannot land for that long, and a writer learning an
#: outcome finds its key
MARKER_AGE = 300.0
#: seconds, by the writer's own clock, during which it may still learn an outcome: well inside
#: MARKER_AGE, so clocks of sweepers may disagree by a minute
RESOLVE_WINDOW = 240.0


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


def applied_revision(entry: Entry) -> int:
    """Return the revision at which the commit whose journal key holds ``entry`` was applied."""
    if entry.value[:1] == RECORD:
        return entry.revision  # written by that very commit
    if entry.value[:1] == SWEPT:
        revision, _, _ = entry.value[1:].partition(b" ")
        return int(revision) if revision.isdigit() else 0
    return 0


def marker_time(value: bytes) -> float | None:
    """Return when a sweep stamped a marker; ``None`` for a record or a marker not stamped yet."""
    if value[:1] == SWEPT:
        _, _, stamped = value[1:].partition(b" ")
    elif value[:1] == CANCELLED:
        stamped = value[1:]
    else:
        return None
    try:
        return float(stamped) if stamped else None
    except ValueError:
        return None


class Journal:
    """Commit through the journal, learn lost outcomes, and keep this process's records tidy."""

    def __init__(self, store: PersistentStore, keys: Keys, cache: LeasedCache, stats: Stats, *,
                 delivers: bool) -> None:
        self.store = store
        self.keys = keys
        self.cache = cache
        self.stats = stats
        #: whether sweeps deliver records to the cache: only a shared cache needs it (a process
        #: with a cache of its own would otherwise mark records swept that others never got)
        self.delivers = delivers
        self._lock = threading.Lock()
        # A store that keeps the cache in its own database (Redis for both roles) deletes a commit's
        # cache entries in the commit itself: invalidated at the instant of the commit, without a
        # round trip of their own (which was a third of a save on Redis). Duck-typed: an optional
        # capability of a store (:class:`~dal.backends.base.EvictingStore`).
        self._evicts = isinstance(store, EvictingStore) and store.evicts_from(cache.store)
        #: records whose invalidations were delivered, with when: to delete
        self._done: list[tuple[str, float]] = []
        #: this process's records whose invalidations have not been delivered yet
        self.undelivered: set[str] = set()
        #: this process's commits whose outcome is still unknown: fenced again by every sweep
        self.unknown: dict[str, Uncertain] = {}

    # --- committing -------------------------------------------------------------------------

    def commit(self, checks: Sequence[Check], ops: Sequence[Op], invalidate: Sequence[str]) -> CommitResult:
        """Commit ``ops`` if ``checks`` hold, with a record of ``invalidate``; deliver it after.

        A failed result never comes from this commit's own earlier send, and no earlier send of it
        can apply later (one that got no answer is fenced: :meth:`_conflict`). Raises BackendError
        when the commit was certainly not applied, CommitOutcomeUnknownError when that could
        not be learnt.
        """
        stamp = time.time()
        key = self.keys.journal_record(stamp, os.urandom(8).hex())
        record = self._encode(invalidate)
        along = self._take_done(len(checks) + len(ops))
        sent_checks = [*checks, Revision(key, 0)]
        sent_ops = [*ops, Put(key, record), *(Delete(done) for done in along)]
        evicted = self._evicts and bool(invalidate)
        if evicted:
            sent_ops += [Evict(cache_key) for cache_key in invalidate]
        try:
            result = self.store.commit(sent_checks, sent_ops)
        except BackendError as exc:
            uncertain = Uncertain(key, record, stamp)
            # a store that cannot lose an answer rolled the failed commit back, and one that refused
            # the commit before applying any of it (RefusedError) wrote nothing: nothing to learn
            certain = not self.store.ambiguous_commits or isinstance(exc, RefusedError)
            outcome, revision = (Outcome.NOT_APPLIED, 0) if certain else self.resolve(uncertain)
            if outcome is not Outcome.APPLIED:
                raise self._failure(exc, outcome, uncertain, along, invalidate) from exc
            result = CommitResult(ok=True, revision=revision)
        else:
            if not result.ok:
                result = self._conflict(result, len(checks), Uncertain(key, record, stamp), along, invalidate)
                if not result.ok:
                    return result
                evicted = False  # that send evicted them when it applied; a fill may have followed
            elif evicted:
                self.queue_done([key])  # its invalidations went with it
                return result
        self._delivered(key, invalidate)
        return result

    def _conflict(self, result: CommitResult, token: int, uncertain: Uncertain, along: list[str],
                  invalidate: Sequence[str]) -> CommitResult:
        """Return a failed commit's result, or a success when an earlier send of it was applied.

        Our record there (the token check failed): an earlier send of this very commit was applied.
        A conflict answered after an earlier send got no answer (``unanswered``: the client sent it
        again to another etcd member) is not final: that send may still apply once the checks it
        failed hold again (a unique value freed). It is fenced as :meth:`resolve` does: not applied,
        the conflict stands and the marker keeps that send from ever applying; applied, a success;
        unknown, CommitOutcomeUnknownError.
        """
        if token in result.failed:
            self.stats.add("commit_answers_lost")
            return CommitResult(ok=True, revision=applied_revision(result.current[uncertain.key]))
        outcome, revision = self.resolve(uncertain) if result.unanswered else (Outcome.NOT_APPLIED, 0)
        if outcome is Outcome.APPLIED:
            return CommitResult(ok=True, revision=revision)
        if outcome is Outcome.UNKNOWN:
            raise self._failure(BackendError(
                "the store answered that a check of this commit failed, but an earlier send of it got no "
                "answer and would apply once that check holds again"), outcome, uncertain, along, invalidate)
        self._give_back(along)
        return result

    def _failure(self, exc: BackendError, outcome: Outcome, uncertain: Uncertain, along: list[str],
                 invalidate: Sequence[str]) -> BackendError:
        """Return the error of a commit not applied (``outcome``), or whose outcome is unknown."""
        self._give_back(along)
        # whatever happened, nothing this commit touched may stay cached
        self.cache.invalidate(*invalidate, recorded=True)
        said = str(exc).rstrip(". ") + "."
        if outcome is Outcome.NOT_APPLIED:
            # a refusal keeps its kind: callers tell a request too large from a store failing
            kind = type(exc) if isinstance(exc, RefusedError) else BackendError
            # safe, but a request too large is refused the same way however often it is sent
            retry = "" if isinstance(exc, TooLargeError) else ": retrying is safe"
            if "nothing was written" not in said.lower():  # a store's refusal may say so itself
                said += f" Nothing was written{retry}."
            return kind(said)
        with self._lock:
            self.unknown[uncertain.key] = uncertain
        return CommitOutcomeUnknownError(
            f"{said} The commit was sent and may have been applied; dal could not learn which "
            f"within {self._budget():g} s. Repeat the operation on the same object: save() "
            "first learns whether this commit was applied and never applies it twice (so does "
            "refresh()), and delete() again is harmless.", uncertain)

    def resolve(self, uncertain: Uncertain, budget: float | None = None) -> tuple[Outcome, int]:
        """Learn whether an uncertain commit was applied, and at which revision (0: not known).

        Fences the commit: a conditional write of a "cancelled" marker under its record's key
        either lands (the commit was not applied and, while the marker stays, never will be) or
        fails on the record or its swept marker (it was). Asked again until ``budget`` seconds
        (the store's timeout by default) pass.
        """
        if time.time() - uncertain.stamp > RESOLVE_WINDOW:
            return self._look(uncertain)
        deadline = time.monotonic() + (self._budget() if budget is None else budget)
        pause = 0.01
        while time.time() - uncertain.stamp <= RESOLVE_WINDOW:
            try:
                fence: CommitResult | None = self.store.commit([Revision(uncertain.key, 0)],
                                                               [Put(uncertain.key, CANCELLED)])
            except BackendError:
                fence = None
            entry = fence.current.get(uncertain.key) if fence is not None else None
            if fence is not None and (fence.ok or entry is not None):
                with self._lock:
                    self.unknown.pop(uncertain.key, None)
                if fence.ok or (entry is not None and entry.value[:1] == CANCELLED):
                    return Outcome.NOT_APPLIED, 0  # the marker stays MARKER_AGE: never deleted by us
                assert entry is not None
                self.stats.add("commit_answers_lost")
                return Outcome.APPLIED, applied_revision(entry)
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        return Outcome.UNKNOWN, 0

    def _look(self, uncertain: Uncertain) -> tuple[Outcome, int]:
        """Past RESOLVE_WINDOW a fence could land on a key whose marker is gone: only look at the key.

        Its record or swept marker says applied, its cancelled marker not applied; nothing there
        (a marker removed after MARKER_AGE) says nothing.
        """
        try:
            entry = self.store.get(uncertain.key)
        except BackendError:
            return Outcome.UNKNOWN, 0
        if entry is None:
            return Outcome.UNKNOWN, 0
        if entry.value[:1] == CANCELLED:
            return Outcome.NOT_APPLIED, 0
        return Outcome.APPLIED, applied_revision(entry)

    def claim_undelivered(self, key: str) -> bool:
        """Tell whether ``key`` is one of this process's undelivered records, forgetting it if so."""
        with self._lock:
            ours = key in self.undelivered
            self.undelivered.discard(key)
        return ours

    def give_up(self, uncertain: Uncertain) -> None:
        """Stop fencing an uncertain commit (its writer was told it may never learn the outcome)."""
        with self._lock:
            self.unknown.pop(uncertain.key, None)

    def settled(self, uncertain: Uncertain, invalidate: Sequence[str], revision: int) -> None:
        """Deliver the invalidations of an uncertain commit found applied later, and mark its record.

        Every key the record holds is delivered, not only those of the object that settles (the
        record of a save_many lists the others too). The record is marked swept only when every
        one of them reached the cache, and only by a process whose cache is shared: otherwise it
        stays a record, which the sweeps of shared-cache processes deliver and mark (a mark
        would take it from them). Marked, not deleted: another copy of the object (a fork, a
        copy) may still learn the outcome through it, and the mark stays MARKER_AGE once a sweep
        stamps it.
        """
        keys = list(dict.fromkeys([*self.decode(uncertain.record), *invalidate]))
        if self.cache.invalidate(*keys, recorded=True) or not self.delivers:
            return
        if revision > 0:
            # conditional: a sweep may have marked it already; if the store fails, it stays a
            # record, which a sweep delivers and marks
            with contextlib.suppress(BackendError):
                self.store.commit([Revision(uncertain.key, revision)],
                                  [Put(uncertain.key, SWEPT + str(revision).encode())])

    def _budget(self) -> float:
        return max(float(self.store.timeout), 1.0)

    def _encode(self, invalidate: Sequence[str]) -> bytes:
        root = self.keys.cache_root
        # each key without the root it starts with: no key holds a newline (the record could not be
        # split back into keys otherwise), so the root that follows one starts the next key
        text = "\n".join(invalidate).replace("\n" + root, "\n")
        return RECORD + text.removeprefix(root).encode()

    def decode(self, value: bytes) -> list[str]:
        """Return the cache keys a record lists."""
        root = self.keys.cache_root
        return [root + key for key in value[1:].decode().split("\n") if key] if len(value) > 1 else []

    # --- deleting records ------------------------------------------------------------------

    def _delivered(self, key: str, invalidate: Sequence[str]) -> None:
        """Deliver a committed record's invalidations; queue the record for deletion if they landed."""
        if self.cache.invalidate(*invalidate, recorded=True):
            with self._lock:
                self.undelivered.add(key)  # stays in the journal: a sweep delivers it
        else:
            self.queue_done([key])

    def queue_done(self, keys: list[str]) -> None:
        """Have this process delete its own records (delivered, or marked by another's sweep)."""
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
        while True:
            with self._lock:
                due = [key for key, when in self._done if when <= limit][:FLUSH_BATCH]
                chosen = set(due)
                self._done = [(key, when) for key, when in self._done if key not in chosen]
            if not due:
                return
            try:
                self.store.commit([], [Delete(key) for key in due])
            except BackendError:
                self._give_back(due)  # deleting twice is harmless: retry later
                return
