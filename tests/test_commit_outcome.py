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
from pathlib import Path

import grpc
import pytest
from conftest import PairURLs, cached_document, persistent_url_for, volatile_url_for
from race_hybrids import Tally

import dal.exceptions
from dal.backends.base import Check, CommitResult, DeletePrefix, Op
from dal.backends.etcd import EtcdStore
from dal.backends.url import parse_url
from dal.config import Context
from dal.exceptions import BackendError, CommitOutcomeUnknownError, ConcurrencyError, ObjectNotFoundError

#: store pairs that keep a commit journal: a store whose answers can be lost, or a shared cache
JOURNALED = [("etcd", "memcached"), ("sqlite", "memcached")]


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
    assert "may have been applied" in message and "save() again" in message
    assert isinstance(raised.value, dal.exceptions.BackendError)
    assert mine.count == 1  # the object is as it was before save()
    assert _cached_count(journaled, tally) is None  # whatever happened, nothing stale stays cached
    lost.plan = []  # the store answers again
    mine.save(datastore_wins=None)  # learns the earlier outcome first: never applies it twice
    assert _stored_count(journaled, tally) == 1
    assert Tally(tally.guid).count == 1


def test_a_create_whose_answer_was_lost_is_stored_once(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["resent"]
    tally = Tally(data={"label": "created", "count": 5})
    tally.save(datastore_wins=None)  # the resend fails its "absent" check: our own create
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
    lost.plan = []
    # another process's sweep delivered the record's invalidations and marked it, meanwhile
    assert journal.sweep(everything=True) == (True, set())
    record = journaled.persistent.get(uncertain.key)  # type: ignore[attr-defined]
    assert record is not None
    mine.save()
    assert _stored_count(journaled, tally) == 1


def test_save_again_while_the_store_is_still_silent_raises_again(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = _tally("silent")
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    mine = Tally(tally.guid)
    mine.count += 1
    for _ in range(2):
        with pytest.raises(CommitOutcomeUnknownError, match=r"still unknown|may have been applied"):
            mine.save()
    lost.plan = []
    mine.save()
    assert _stored_count(journaled, tally) == 1


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

