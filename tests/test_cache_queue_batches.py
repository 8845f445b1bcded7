"""The durable queue of dynamics on a stock etcd: queueing and removing more dynamics than one etcd
transaction holds (``--max-txn-ops``, 128 by default) takes several commits, and a failure midway
leaves the commits before it done, which queueing (or removing) again completes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import dal
from dal import DataObject, Dynamic, Property
from dal.backends.base import DeletePrefix
from dal.config import Context, configure
from dal.exceptions import BackendError
from dal.testing.servers import RunningServer
from dal.tools import cache
from dal.tools.cache.queue import BATCH

pytestmark = pytest.mark.etcd

#: more objects than one etcd transaction takes checks or writes for
OBJECTS = 200


class QueuedGauge(DataObject, hybrid_name="queuedgauge"):
    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("reading", int, 600)]

    def _reading(self) -> int:
        return len(self.name)


@pytest.fixture
def context(etcd_server: RunningServer) -> Iterator[Context]:
    """dal on the suite's etcd (stock limits), in a fresh namespace holding OBJECTS gauges."""
    context = configure(etcd_server.url, "memory://", namespace=f"t{uuid.uuid4().hex[:12]}")
    dal.save_many([QueuedGauge(data={"name": f"g{index}"}) for index in range(OBJECTS)])
    yield context
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def _failing_second_commit(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's second commit from now fail before it is sent (as a refusal would)."""
    store: Any = context.persistent
    real, commits = store.commit, []

    def commit(checks: Any, ops: Any) -> Any:
        commits.append(len(ops))
        if len(commits) == 2:
            raise BackendError("etcd failed (injected)")
        return real(checks, ops)

    monkeypatch.setattr(store, "commit", commit)


def test_queueing_and_removing_more_dynamics_than_one_etcd_transaction_holds(context: Context) -> None:
    assert cache.queue(context, "queuedgauge", "reading") == OBJECTS
    listed = cache.queued(context)
    assert len(listed) == OBJECTS and len(set(listed)) == OBJECTS
    assert cache.queue(context, "queuedgauge", "reading") == 0  # no duplicates across commits
    assert cache.queued(context) == listed  # insertion order across commits
    cache.remove(context, listed)
    assert cache.queued(context) == []


def test_a_queue_failing_midway_keeps_the_commits_before_and_queueing_again_adds_the_rest(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        _failing_second_commit(context, patch)
        with pytest.raises(BackendError, match="injected"):
            cache.queue(context, "queuedgauge", "reading")
    first = cache.queued(context)
    assert len(first) == BATCH
    assert cache.queue(context, "queuedgauge", "reading") == OBJECTS - BATCH
    listed = cache.queued(context)
    assert len(set(listed)) == OBJECTS and listed[:BATCH] == first


def test_a_remove_failing_midway_keeps_the_rest_queued_and_removing_again_removes_it(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache.queue(context, "queuedgauge", "reading") == OBJECTS
    listed = cache.queued(context)
    with monkeypatch.context() as patch:
        _failing_second_commit(context, patch)
        with pytest.raises(BackendError, match="injected"):
            cache.remove(context, listed)
    assert cache.queued(context) == listed[BATCH:]
    cache.remove(context, listed)
    assert cache.queued(context) == []
