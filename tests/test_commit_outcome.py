"""A commit whose answer is lost: dal learns what happened instead of guessing.

The store is made to lose answers at the boundary dal talks to (``persistent.commit``):
applied and then the connection "drops", applied and then resent by the client (as etcd's
client does on UNAVAILABLE), or lost before it reached the store. Each case must end with the
write applied exactly once and reported truthfully. The same faults on the wire, through a
proxy in front of a real etcd cluster, are in ``tests/faults/test_etcd_faults.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import PairURLs, cached_document, persistent_url_for, volatile_url_for
from race_hybrids import Tally

import dal.exceptions
from dal.backends.base import Check, CommitResult, Delete, DeletePrefix, Op, Put, Revision
from dal.backends.etcd import EtcdStore
from dal.backends.url import parse_url
from dal.cache.journal import CANCELLED, MARKER_AGE, RECORD, SWEPT, Uncertain, marker_time
from dal.config import Context
from dal.exceptions import BackendError, CommitOutcomeUnknownError, ConcurrencyError, ObjectNotFoundError

#: store pairs whose durable store can lose an answer (etcd, Redis), with a shared cache and with one
#: of the process's own: both keep a commit journal
JOURNALED = [("etcd", "memcached"), ("etcd", "memory"), ("redis", "redis")]


@pytest.fixture(params=JOURNALED, ids=["+".join(pair) for pair in JOURNALED])
def journaled(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Context]:
    persistent = persistent_url_for(request.param[0], request, tmp_path) + "?timeout=1"
    urls = PairURLs(persistent, volatile_url_for(request.param[1], request), namespace)
    context = urls.configure()
    assert context.journal is not None
    yield context
    context.close()
    urls.configure().persistent.commit([], [DeletePrefix(context.keys.root)])


class LostAnswers:
    """Make the store lose the answers of the next commits, in one of three ways."""

    def __init__(self, context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real: Callable[[Sequence[Check], Sequence[Op]], CommitResult] = context.persistent.commit
        self.plan: list[str] = []  # per coming commit: "applied", "resent", "unsent" or "down"
        self.calls = 0
        monkeypatch.setattr(context.persistent, "commit", self.commit)

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        self.calls += 1
        how = self.plan.pop(0) if self.plan else "ok"
        if how == "resent":  # applied, the answer lost, the client resends: the resend's answer
            self.real(checks, ops)
            return self.real(checks, ops)
        if how == "applied":
            self.real(checks, ops)
        if how in ("applied", "unsent", "down"):
            raise BackendError(f"simulated: the store's answer was lost ({how})")
        return self.real(checks, ops)


def _cached_count(context: Context, tally: Tally) -> int | None:
    """Return the count in the object's cached document on the server, None when not cached."""
    cached = cached_document(context, "tally", tally.guid)
    return None if cached is None else int(cached[1]["count"])


def _stored_revision(context: Context, tally: Tally) -> int:
    entry = context.persistent.get(context.keys.doc("tally", tally.guid))
    assert entry is not None
    return entry.revision


def _stored_count(context: Context, tally: Tally) -> int:
    entry = context.persistent.get(context.keys.doc("tally", tally.guid))
    assert entry is not None
    return int(json.loads(entry.value)["count"])


def _tally(label: str) -> Tally:
    tally = Tally(data={"label": label, "count": 0})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0  # cached now
    return tally


@pytest.mark.parametrize("how", ["resent", "applied"])
def test_an_applied_commit_whose_answer_was_lost_reports_success(
        journaled: Context, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    tally = _tally(f"lost-{how}")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = [how]
    mine = Tally(tally.guid)
    mine.count += 1
    mine.save(datastore_wins=None)  # no ConcurrencyError for our own write
    assert _stored_count(journaled, tally) == 1
    assert mine.count == 1 and not mine.updated_on_datastore()
    assert journaled.stats["commit_answers_lost"] == 1
    assert _cached_count(journaled, tally) in (None, 1)  # nothing stale left behind
    assert Tally(tally.guid).count == 1


def test_a_commit_that_never_reached_the_store_says_nothing_was_written(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = _tally("unsent")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["unsent"]
    mine = Tally(tally.guid)
    mine.count += 1
    with pytest.raises(BackendError, match="Nothing was written: retrying is safe") as raised:
        mine.save(datastore_wins=None)
    assert not isinstance(raised.value, CommitOutcomeUnknownError)
    assert _stored_count(journaled, tally) == 0
    assert _cached_count(journaled, tally) is None  # invalidated after the failed attempt anyway
    mine.save(datastore_wins=None)
    assert _stored_count(journaled, tally) == 1


@pytest.mark.parametrize("applied", [True, False])
def test_an_outcome_unknown_until_the_deadline_is_learnt_by_the_next_save(
        journaled: Context, monkeypatch: pytest.MonkeyPatch, applied: bool) -> None:
    tally = _tally(f"unknown-{applied}")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied" if applied else "unsent"] + ["down"] * 1000  # the fences get no answer either
    mine = Tally(tally.guid)
    mine.count += 1
    started = time.monotonic()
    with pytest.raises(CommitOutcomeUnknownError) as raised:
        mine.save(datastore_wins=None)
    assert time.monotonic() - started < 5  # the store's timeout (1 s here) bounds the wait
    message = str(raised.value)
    assert "may have been applied" in message and "Repeat the operation on the same object" in message
    assert isinstance(raised.value, dal.exceptions.BackendError)
    assert mine.count == 1  # the object is as it was before save()
    assert _cached_count(journaled, tally) is None  # whatever happened, nothing stale stays cached
    lost.plan = []  # the store answers again
    mine.save(datastore_wins=None)  # learns the earlier outcome first: never applies it twice
    assert _stored_count(journaled, tally) == 1
    assert Tally(tally.guid).count == 1


def test_a_create_whose_answer_was_lost_is_stored_once(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    _tally("first")  # the hybrid's schema record is written now, so the lost answer is the create's
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["resent"]
    tally = Tally(data={"label": "created", "count": 5})
    tally.save(datastore_wins=None)  # the resend fails its "absent" check: our own create
    assert journaled.stats["commit_answers_lost"] == 1
    assert Tally(tally.guid).count == 5
    tally.count = 6
    tally.save(datastore_wins=None)
    assert _stored_count(journaled, tally) == 6


def test_a_delete_whose_answer_was_lost_reports_success(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = _tally("deleted")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"]
    Tally(tally.guid).delete()
    # on the cache server itself, before any load of this process could drop it
    assert _cached_count(journaled, tally) is None
    with pytest.raises(ObjectNotFoundError):
        Tally(tally.guid)
    assert journaled.persistent.get(journaled.keys.doc("tally", tally.guid)) is None


def test_control_without_the_commit_token_a_resent_commit_looks_like_a_conflict(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove the tests above can fail: commits that bypass the journal cannot recognise themselves."""
    tally = _tally("control")
    monkeypatch.setattr(journaled, "journal", None)
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["resent"]
    mine = Tally(tally.guid)
    mine.count += 1
    with pytest.raises(ConcurrencyError):
        mine.save(datastore_wins=None)
    assert _stored_count(journaled, tally) == 1  # although it was stored


def test_the_journal_fence_tells_a_sweep_retired_record_from_a_cancelled_one(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """An applied commit whose record a sweep already marked as delivered is still found applied."""
    journal = journaled.journal
    assert journal is not None
    tally = _tally("swept")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    mine = Tally(tally.guid)
    mine.count += 1
    with pytest.raises(CommitOutcomeUnknownError) as raised:
        mine.save()
    uncertain = raised.value.commit
    assert isinstance(uncertain, Uncertain)
    assert journaled.sweeper is not None
    journaled.sweeper.stop()  # so that the sweep below is the one that marks the record
    lost.plan = []
    # another process's sweep delivered the record's invalidations and marked it, meanwhile
    marker = SWEPT + f"{_stored_revision(journaled, tally)} {time.time():.3f}".encode()
    record = journaled.persistent.get(uncertain.key)
    assert record is not None and record.value[:1] == RECORD
    assert journaled.persistent.commit([Revision(uncertain.key, record.revision)],
                                       [Put(uncertain.key, marker)]).ok
    mine.save(datastore_wins=None)  # settles as applied (not twice, not a conflict)
    assert _stored_count(journaled, tally) == 1
    # at the revision it was applied at, so the next save's check is the right one
    assert mine._revision == _stored_revision(journaled, tally)
    Tally(tally.guid).delete()
    mine.count += 1
    with pytest.raises(ObjectNotFoundError):  # never resurrected by a guessed revision
        mine.save(datastore_wins=None)


def test_save_again_while_the_store_is_still_silent_raises_again(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = _tally("silent")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    mine = Tally(tally.guid)
    mine.count += 1
    for _ in range(2):
        with pytest.raises(CommitOutcomeUnknownError, match=r"still unknown|may have been applied"):
            mine.save(datastore_wins=None)
    lost.plan = []
    mine.save(datastore_wins=None)  # a wrong "not applied" would send it again: a conflict here
    assert _stored_count(journaled, tally) == 1


def test_an_applied_merged_save_settles_without_reverting_the_other_writers_field(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = _tally("merged")
    mine = Tally(tally.guid)
    theirs = Tally(tally.guid)
    theirs.note = "theirs"
    theirs.save()
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["ok", "applied"] + ["down"] * 1000  # a conflict, then the merged commit loses its answer
    mine.count = 1
    with pytest.raises(CommitOutcomeUnknownError):
        mine.save()
    mine.count = 5  # changed again before trying once more
    lost.plan = []
    mine.save()
    stored = Tally(tally.guid)
    assert (stored.count, stored.note) == (5, "theirs")
    assert (mine.count, mine.note) == (5, "theirs")


def test_refresh_settles_an_uncertain_save_before_it_reloads(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = _tally("refreshed")
    mine = Tally(tally.guid)
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    mine.note = "n1"
    with pytest.raises(CommitOutcomeUnknownError):
        mine.save()
    lost.plan = []
    other = Tally(tally.guid)
    other.note = "n2"
    other.save()
    mine.refresh()
    assert mine.note == "n2"
    other.note = "n3"
    other.save()
    mine.count = 7  # only count is ours now
    mine.save()
    stored = Tally(tally.guid)
    assert (stored.count, stored.note) == (7, "n3")


def _applied_unknown_then_swept(journaled: Context, monkeypatch: pytest.MonkeyPatch,
                                label: str) -> tuple[Tally, Tally]:
    """Save an increment whose answer and fences are lost (it was applied), then let one background
    tick learn the outcome once the store answers again. Return the stored tally and the object."""
    tally = _tally(label)
    assert journaled.sweeper is not None
    journaled.sweeper.stop()  # the test runs the tick
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    mine = Tally(tally.guid)
    mine.count += 1
    with pytest.raises(CommitOutcomeUnknownError):
        mine.save(datastore_wins=None)
    lost.plan = []
    assert journaled.journal is not None and journaled.journal.unknown
    journaled.sweeper.sweep.tick()  # learns it was applied: the record stays, a sweep marks it later
    assert not journaled.journal.unknown
    return tally, mine


def test_an_outcome_learnt_in_the_background_is_learnt_alike_by_the_object(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweeps fence unknown commits too; they must leave the object able to settle after them."""
    tally, mine = _applied_unknown_then_swept(journaled, monkeypatch, "background")
    assert journaled.journal is not None
    journaled.journal.flush()
    mine.save(datastore_wins=None)  # must find it applied too: neither twice nor a conflict
    assert _stored_count(journaled, tally) == 1


def test_an_outcome_learnt_by_a_sweep_is_still_known_past_the_window(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from dal.cache import journal as journal_module
    from dal.objects import writes as dataobject  # where saves settle an unknown outcome

    tally, mine = _applied_unknown_then_swept(journaled, monkeypatch, "late")
    monkeypatch.setattr(dataobject, "RESOLVE_WINDOW", 0.0)  # the next save comes minutes later
    monkeypatch.setattr(journal_module, "RESOLVE_WINDOW", 0.0)
    mine.save(datastore_wins=None)  # no fence any more, but the key still tells: applied
    assert _stored_count(journaled, tally) == 1 and mine.count == 1


@dataclass
class _Fenced:
    tally: Any
    #: the store's own commit, to deliver the late copy with
    real: Callable[[Sequence[Check], Sequence[Op]], CommitResult]
    checks: Sequence[Check]
    ops: Sequence[Op]
    #: the key of the commit's journal record, the fence's marker once fenced
    key: str


def _fenced_save(journaled: Context, monkeypatch: pytest.MonkeyPatch, name: str) -> _Fenced:
    """Save a Tally whose commit is sent, held back (still travelling: a TCP buffer, a proxy) and
    answered by an error, so the save fences it; return what a late copy of it would carry."""
    tally = _tally(name)
    sent: list[tuple[Sequence[Check], Sequence[Op]]] = []
    real = LostAnswers(journaled, monkeypatch).real

    def keep(checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        if not sent:
            sent.append((checks, ops))
            raise BackendError("simulated: the commit is still on its way")
        return real(checks, ops)

    monkeypatch.setattr(journaled.persistent, "commit", keep)
    mine = Tally(tally.guid)
    mine.count = 1
    with pytest.raises(BackendError, match="Nothing was written"):
        mine.save()
    checks, ops = sent[0]
    key = next(op.key for op in ops if isinstance(op, Put) and op.value[:1] == RECORD)
    return _Fenced(tally, real, checks, ops, key)


def test_a_fenced_commit_cannot_land_later_while_its_marker_stays(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the original commit still travelling (a TCP buffer, a proxy) arrives after the fence."""
    fenced = _fenced_save(journaled, monkeypatch, "fenced")
    assert journaled.journal is not None
    journaled.journal.flush()  # whatever this process deletes, the marker is not among it
    marker = journaled.persistent.get(fenced.key)
    assert marker is not None and marker.value[:1] == CANCELLED
    assert not fenced.real(fenced.checks, fenced.ops).ok  # the late copy arrives: refused
    assert _stored_count(journaled, fenced.tally) == 0


#: how long docs/guarantees.md says a fenced commit cannot land: "while its marker stays (5 minutes)"
PROMISED_MARKER_AGE = 300.0


def test_a_fenced_commit_cannot_land_until_its_marker_ages_out(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence's marker is what refuses a late copy, and the sweeps remove it MARKER_AGE after they
    stamp it. The test runs the sweeps itself, on a clock it sets, rather than wait 5 minutes."""
    from dal.cache import sweeps as sweeps_module  # where the sweeps read their clock

    fenced = _fenced_save(journaled, monkeypatch, "fenced-aging")
    tally, real, checks, ops, key = fenced.tally, fenced.real, fenced.checks, fenced.ops, fenced.key
    assert journaled.sweeper is not None and journaled.journal is not None
    journaled.sweeper.stop()  # from here only the sweeps below run, each at the time the test says
    journaled.journal.flush()

    now = [time.time()]  # the sweeps' clock: it stands still between the steps below

    class Clock:
        monotonic = staticmethod(time.monotonic)
        sleep = staticmethod(time.sleep)

        @staticmethod
        def time() -> float:
            return now[0]

    monkeypatch.setattr(sweeps_module, "time", Clock)
    sweep = journaled.sweeper.sweep
    sweep.sweep()  # stamps the marker (unless the background sweep did before it stopped)
    marker = journaled.persistent.get(key)
    assert marker is not None and marker.value[:1] == CANCELLED
    stamped = marker_time(marker.value)
    assert stamped is not None

    # a second short of the promised age (a sweep stamps in whole milliseconds, rounded down)
    now[0] = stamped + PROMISED_MARKER_AGE - 1.0
    sweep.sweep()
    assert not real(checks, ops).ok, "the late copy landed before 5 minutes"  # still refused
    assert _stored_count(journaled, tally) == 0
    marker = journaled.persistent.get(key)
    assert marker is not None and marker.value[:1] == CANCELLED  # what refused it

    # past MARKER_AGE a sweep removes it: markers do not pile up. From then on nothing refuses the
    # late copy but its own checks; that is the bound the guarantee states
    now[0] = stamped + MARKER_AGE + 1.0
    sweep.sweep()
    assert journaled.persistent.get(key) is None


def test_a_writer_whose_clock_is_behind_still_learns_its_commit_was_applied(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from dal.cache import journal as journal_module
    from dal.cache import sweeps as sweeps_module

    tally = _tally("skewed")
    behind = time.time() - 400  # older than any marker age, by the sweeper's clock

    real_monotonic, real_sleep = time.monotonic, time.sleep

    class Clock:
        monotonic = staticmethod(real_monotonic)
        sleep = staticmethod(real_sleep)

        @staticmethod
        def time() -> float:
            return behind + (real_monotonic() - started)

    started = time.monotonic()
    monkeypatch.setattr(journal_module, "time", Clock)  # the writer's clock; sweeps keep the real one
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    mine = Tally(tally.guid)
    mine.count = 1
    with pytest.raises(CommitOutcomeUnknownError) as raised:
        mine.save(datastore_wins=None)
    assert journaled.sweeper is not None
    journaled.sweeper.stop()
    lost.plan = []
    journaled.sweeper.sweep.sweep()  # sees an ancient record: marks it, never deletes it outright
    # the next sweep tidies markers: it ages this one from its own stamp (the sweeper's clock), not
    # from the writer's stamp in the key, which is 400 s old. Deleted, the fence would land and say
    # "not applied" of a commit that was applied
    journaled.sweeper.sweep.sweep()
    assert isinstance(raised.value.commit, Uncertain)
    left = journaled.persistent.get(raised.value.commit.key)
    expected = SWEPT if journaled.journal is not None and journaled.journal.delivers else RECORD
    assert left is not None and left.value[:1] == expected, "a sweep aged the marker by the writer's clock"
    mine.save(datastore_wins=None)
    assert _stored_count(journaled, tally) == 1
    del sweeps_module


def test_an_outcome_not_learnt_in_time_frees_the_object(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from dal.cache import journal as journal_module
    from dal.objects import writes as dataobject  # where saves settle an unknown outcome

    tally = _tally("freed")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    mine = Tally(tally.guid)
    mine.count = 1
    with pytest.raises(CommitOutcomeUnknownError) as raised:
        mine.save(datastore_wins=None)
    monkeypatch.setattr(dataobject, "RESOLVE_WINDOW", 0.0)  # as if the store stayed silent for minutes
    with pytest.raises(CommitOutcomeUnknownError, match="no longer can be"):
        mine.save(datastore_wins=None)
    lost.plan = []
    assert Tally(tally.guid).count == 1  # the advice: load it again and look (it was applied)
    # minutes later the outcome cannot be learnt at all: past the journal's window too, and the
    # record's marker gone (MARKER_AGE). An object still holding the commit would raise again here
    monkeypatch.setattr(journal_module, "RESOLVE_WINDOW", 0.0)
    assert isinstance(raised.value.commit, Uncertain)
    journaled.persistent.commit([], [Delete(raised.value.commit.key)])
    # "usable again" is about this very object, not a fresh load: its next save is an ordinary save,
    # not the give-up error once more. It cannot know its count=1 was stored, so count reads as
    # changed on both sides; datastore_wins=False keeps ours
    mine.count = 2
    mine.save(datastore_wins=False)
    assert _stored_count(journaled, tally) == 2 and mine.count == 2
    assert mine._revision == _stored_revision(journaled, tally)


@pytest.mark.memcached
def test_a_local_store_says_nothing_was_written_at_once(
        tmp_path: Path, namespace: str, memcached_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed SQLite commit was rolled back: no fence, no "may have been applied"."""
    context = PairURLs(f"sqlite:///{tmp_path / 'local.sqlite3'}?timeout=1", memcached_server.url,
                       namespace).configure()
    try:
        assert context.journal is not None and not context.persistent.ambiguous_commits
        tally = _tally("local")
        calls: list[int] = []

        def locked(checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
            calls.append(len(ops))
            raise BackendError("simulated: sqlite could not take the write lock")

        monkeypatch.setattr(context.persistent, "commit", locked)
        mine = Tally(tally.guid)
        mine.count = 1
        with pytest.raises(BackendError, match="Nothing was written") as raised:
            mine.save()
        assert not isinstance(raised.value, CommitOutcomeUnknownError)
        assert len(calls) == 1  # no fence
    finally:
        context.close()


# --- how etcd's own timeouts read -------------------------------------------------------------


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("code", [grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED])
def test_an_etcd_timeout_reads_like_a_timeout_whatever_grpc_called_it(code: grpc.StatusCode) -> None:
    store = EtcdStore.from_url(parse_url("etcd://127.0.0.1:1?timeout=3"))
    try:
        error = store._error(_RpcError(code, "context deadline exceeded"), None, time.monotonic())
        message = str(error)
        assert "did not answer within 3 s" in message and "majority" in message
        assert "UNKNOWN" not in message and "context deadline exceeded" not in message
        early = str(store._error(_RpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"), None,
                                 time.monotonic() + 2))
        assert "could not reach etcd" in early
    finally:
        store.close()



# --- without a journal: the default pair ------------------------------------------------------


def test_a_commit_that_failed_after_writing_leaves_nothing_cached_without_a_journal(
        local: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite + memory:// (the default) keeps no journal: an error from the store must still evict.

    The store applies the write and then raises (an I/O error on sync, say): whatever it did, the
    cached document of before may not be served afterwards, or this process reads a value the
    store no longer holds.
    """
    assert local.journal is None
    tally = _tally("no journal")
    lost = LostAnswers(local, monkeypatch)
    lost.plan = ["applied"]  # written, then BackendError
    mine = Tally(tally.guid)
    mine.count = 1
    with pytest.raises(BackendError):
        mine.save()
    assert lost.calls == 1 and _stored_count(local, tally) == 1  # the write did land
    assert _cached_count(local, tally) is None  # evicted although the commit raised
    assert Tally(tally.guid).count == 1  # the next read gets the stored value, not the cached 0


# --- a conflict answered to a resend: the unanswered first send must never land later --------------


class HeldSend:
    """Hold back the first send of the next commit etcd's client makes, as a frozen member does.

    Wraps the gRPC stub of each endpoint: the next ``Txn`` with checks goes nowhere and times out, so
    the client sends it again to the other endpoint (the same etcd, through a loopback proxy), which
    answers; :meth:`release` delivers the held send to etcd afterwards, as the member would on resuming.
    """

    def __init__(self, store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.request: Any = None
        #: a stub of etcd's KV service that holds nothing: what releases the held send
        self.real = next(iter(store._stubs.values()))["kv"]
        for stubs in store._stubs.values():
            monkeypatch.setitem(stubs, "kv", _HoldingStub(stubs["kv"], self))

    def take(self, request: Any) -> bool:
        """Hold ``request`` if armed (once): ``True`` when it was held."""
        if not self.armed or not request.compare:
            return False
        self.armed, self.request = False, request
        return True

    def release(self) -> bool:
        """Deliver the held send to etcd; return whether it applied."""
        assert self.request is not None, "no send was held"
        return bool(self.real.Txn(self.request, timeout=5).succeeded)


class _HoldingStub:
    def __init__(self, real: Any, held: HeldSend) -> None:
        self.real, self.held = real, held

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def Txn(self, request: Any, **kwargs: Any) -> Any:  # gRPC's name
        if self.held.take(request):
            raise _RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return self.real.Txn(request, **kwargs)


@pytest.fixture
def resent(etcd_server: Any, namespace: str,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Context, HeldSend]]:
    """dal on one etcd reached two ways (directly and through a proxy), whose next commit's first send is
    held back once armed."""
    from dal.testing.proxy import LoopbackProxy

    with LoopbackProxy((etcd_server.host, etcd_server.port)) as proxy:
        url = f"etcd://{etcd_server.host}:{etcd_server.port},{proxy.netloc}?timeout=1"
        context = PairURLs(url, "memory://", namespace).configure()
        assert isinstance(context.persistent, EtcdStore) and context.journal is not None
        yield context, HeldSend(context.persistent, monkeypatch)
        monkeypatch.undo()
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
        context.close()


def _refused_while_held(held: HeldSend) -> tuple[Tally, Tally]:
    """Store a holder of a unique value, then save another object claiming it, its first send held."""
    holder = Tally(data={"label": "taken", "count": 0})
    holder.save()
    late = Tally(data={"label": "taken", "count": 1})
    held.armed = True
    return holder, late


@pytest.mark.etcd
def test_a_commit_refused_on_a_unique_value_after_a_resend_never_lands_later(
        resent: tuple[Context, HeldSend]) -> None:
    """The resend is refused (the value is held), the holder is deleted, the held first send arrives."""
    _, held = resent
    holder, late = _refused_while_held(held)
    with pytest.raises(dal.exceptions.UniqueConstraintError):
        late.save()
    assert held.request is not None  # the first send was held, and the refusal answered the resend
    holder.delete()  # the value is free: the held send's own checks would pass now
    assert not held.release(), "the held send of a save refused on a unique value landed later"
    with pytest.raises(ObjectNotFoundError):
        Tally(late.guid)


@pytest.mark.etcd
def test_a_commit_refused_after_a_resend_whose_first_send_landed_before_the_fence_is_a_success(
        resent: tuple[Context, HeldSend], monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder is deleted and the held send lands between the resend's refusal and the fence: the
    save reports what happened, a success, and the object is stored once."""
    context, held = resent
    holder, late = _refused_while_held(held)
    journal = context.journal
    assert journal is not None
    real_resolve, landed = journal.resolve, []

    def resolve(uncertain: Uncertain, budget: float | None = None) -> Any:
        if not landed:
            holder.delete()
            landed.append(held.release())
        return real_resolve(uncertain, budget)

    monkeypatch.setattr(journal, "resolve", resolve)
    late.save()
    assert landed == [True]
    assert Tally(late.guid).count == 1 and late._revision == _stored_revision(context, late)
    assert context.stats["commit_answers_lost"] == 1


@pytest.mark.etcd
def test_a_commit_refused_after_a_resend_whose_fence_gets_no_answer_is_an_unknown_outcome(
        resent: tuple[Context, HeldSend], monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused on the resend, but the fence finds no store to answer it: not a conflict, since the held
    send may still land; the next save learns it did not and is refused on the unique value."""
    context, held = resent
    holder, late = _refused_while_held(held)
    real_commit = context.persistent.commit

    def silent_fences(checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        if ops and isinstance(ops[0], Put) and ops[0].value == CANCELLED:
            raise BackendError("simulated: the store does not answer the fence")
        return real_commit(checks, ops)

    monkeypatch.setattr(context.persistent, "commit", silent_fences)
    with pytest.raises(CommitOutcomeUnknownError):
        late.save()
    monkeypatch.setattr(context.persistent, "commit", real_commit)
    with pytest.raises(dal.exceptions.UniqueConstraintError):
        late.save()  # learns the held send was not applied (fenced now), then is refused again
    holder.delete()
    assert not held.release()
    with pytest.raises(ObjectNotFoundError):
        Tally(late.guid)


@pytest.mark.etcd
def test_control_without_the_fence_a_commit_refused_after_a_resend_lands_later(
        resent: tuple[Context, HeldSend], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same faults with the store not telling that a send went unanswered: the refused save lands."""
    context, held = resent
    holder, late = _refused_while_held(held)
    real_commit = context.persistent.commit

    def untold(checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        result = real_commit(checks, ops)
        return CommitResult(ok=result.ok, revision=result.revision, failed=result.failed,
                            current=result.current)

    monkeypatch.setattr(context.persistent, "commit", untold)
    with pytest.raises(dal.exceptions.UniqueConstraintError):
        late.save()
    holder.delete()
    assert held.release()  # the phantom: refused, and stored all the same
    assert Tally(late.guid).count == 1


@pytest.mark.etcd
def test_a_queue_add_refused_after_a_resend_never_queues_again_later(
        resent: tuple[Context, HeldSend]) -> None:
    """dal.tools.cache.add commits through the journal: its first send held, the resend refused (one item
    queued already) and retried without it, the queue emptied by a prefetcher; the held send, released,
    must not queue both again."""
    from dal.tools.cache import Queued, add, queued, remove

    context, held = resent
    items = [Queued("h", "g1", "d"), Queued("h", "g2", "d")]
    assert add(context, items[:1]) == 1  # another process queued g1 already
    held.armed = True
    assert add(context, items) == 1
    assert held.request is not None  # the first send was held, and the refusal answered the resend
    remove(context, queued(context))  # a prefetcher computed both
    assert not held.release(), "the held first send of a refused add landed later"
    assert queued(context) == []
