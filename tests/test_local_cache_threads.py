"""Threads of one context never read a process-local cache while another thread empties it.

A local cache (``memory://``) in front of a shared durable store is emptied when another process
committed (the store's change token moved) or a commit went through another context of this
process (``dal.cache.ledger``). The thread that notices empties it; another thread that notices the
same change meanwhile must wait for the emptying, not take the change as handled and read an entry
it made stale (``Context.check_local_cache``). The interleaving is injected: the emptying thread
pauses inside the emptying until the other thread has started its read.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import run_spawned
from query_hybrids import Item

from dal import DataList, configure
from dal.config import Context, current

#: how long the emptying thread holds on once the reader started: ample for a read of the cache
PAUSE = 0.5


def _resize_in_child(persistent: str, volatile: str, namespace: str, guid: str, size: int) -> None:
    configure(persistent, volatile, namespace=namespace)
    item = Item(guid)
    item.size = size
    item.save()


def _read(guid: str) -> tuple[int, int]:
    """Read the item's size and how many items a query on the old size finds: each from the cache
    when it is there (the query's result is not covered by monotonic reads, unlike the object)."""
    return Item(guid).size, len(DataList(Item, {"items": [("size", "EQUALS", 1)]}))


def _read_in_two_threads(context: Context, guid: str) -> dict[str, tuple[int, int]]:
    """Read in two threads, the second starting while the first empties the cache."""
    emptying, reading = threading.Event(), threading.Event()
    real = context._clear_local

    def slow_clear() -> None:
        if threading.current_thread().name == "empties":
            emptying.set()
            reading.wait(10)
            threading.Event().wait(PAUSE)  # the reader's read happens now, unless it waits for us
        real()

    context._clear_local = slow_clear  # type: ignore[method-assign]
    seen: dict[str, tuple[int, int]] = {}

    def empties() -> None:
        seen["empties"] = _read(guid)

    def reads() -> None:
        assert emptying.wait(10)
        reading.set()
        seen["reads"] = _read(guid)

    threads = [threading.Thread(target=empties, name="empties"), threading.Thread(target=reads, name="reads")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return seen


@pytest.mark.parametrize("writer", ["another process", "another context"])
def test_a_thread_never_reads_the_local_cache_while_another_empties_it(tmp_path: Path, writer: str) -> None:
    store, tag = f"sqlite:///{tmp_path / 'store.sqlite3'}", uuid.uuid4().hex[:8]
    mine = f"memory://mine{tag}"
    context = configure(store, mine, namespace="lt")
    item = Item(data={"name": "i", "size": 1})
    item.save()
    assert _read(item.guid) == (1, 1)  # cached in this process's cache
    if writer == "another process":
        run_spawned(_resize_in_child, store, "memory://", "lt", item.guid, 2)
    else:
        configure(store, f"memory://theirs{tag}", namespace="lt")
        _resize_in_child(store, f"memory://theirs{tag}", "lt", item.guid, 2)
        context = configure(store, mine, namespace="lt")
    assert current() is context
    before = context.stats.snapshot().get("object_local_flushes", 0)
    seen = _read_in_two_threads(context, item.guid)
    assert seen == {"empties": (2, 0), "reads": (2, 0)}, "a thread read the cache while another emptied it"
    flushes: Any = context.stats.snapshot().get("object_local_flushes", 0) - before
    assert flushes == 1, f"emptied {flushes} times for one change"


def test_two_contexts_noting_one_emptying_leave_the_next_missed_commit_missed() -> None:
    """Two contexts in front of one cache and one store client share a ledger, each with a lock of its
    own: both may empty the cache for one change and note it in either order. Neither noting may
    take a later commit through another context for heard (the cache would keep what it made stale)."""
    from dal.cache.ledger import Ledger, _StoreCommits

    commits = _StoreCommits()
    mine, other = Ledger(commits), Ledger(commits)
    other.committed()  # another context's commit: this cache missed it
    assert mine.missed()
    first, second = mine.mark(), mine.mark()  # two threads, of two contexts, noticed it
    mine.committed()  # one commit through this cache meanwhile: heard
    mine.synced(first)
    mine.synced(second)
    assert not mine.missed(), "the emptying accounts for every commit before it"
    other.committed()
    assert mine.missed(), "a later commit through another context went unnoticed"
