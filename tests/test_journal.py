"""The commit journal: records delivered then removed, a dead writer's record swept by others.

A writer killed between its commit and its invalidation is simulated here by a writer that
"forgets" to deliver (its process would have died at that point); the same with real SIGKILLed
processes is in ``tests/faults/test_writer_kills.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import PairURLs, cached_document, persistent_url_for, volatile_url_for
from race_hybrids import Tally

from dal import journal as journal_module
from dal.backends.base import DeletePrefix
from dal.config import Context, configure
from dal.integrity import check
from dal.journal import RECORD, SWEPT, Journal

JOURNALED = [("etcd", "memcached"), ("sqlite", "memcached")]


@pytest.fixture(params=JOURNALED, ids=["+".join(pair) for pair in JOURNALED])
def journaled(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Context]:
    urls = PairURLs(persistent_url_for(request.param[0], request, tmp_path),
                    volatile_url_for(request.param[1], request), namespace)
    context = urls.configure()
    yield context
    context.close()
    urls.configure().persistent.commit([], [DeletePrefix(context.keys.root)])


def records(context: Context) -> dict[str, bytes]:
    return {key: entry.value for key, entry in context.persistent.scan(context.keys.journal())}


def cached_revision(context: Context, tally: Tally) -> int | None:
    """Return the revision of the object's cached document on the server, None when not cached."""
    cached = cached_document(context, "tally", tally.guid)
    return None if cached is None else cached[0]


def stored_revision(context: Context, tally: Tally) -> int:
    entry = context.persistent.get(context.keys.doc("tally", tally.guid))
    assert entry is not None
    return entry.revision


def test_only_shared_caches_or_remote_stores_keep_a_journal(tmp_path: Path, namespace: str) -> None:
    embedded = configure(f"sqlite:///{tmp_path / 'a.sqlite3'}", "memory://", namespace=namespace)
    try:
        assert embedded.journal is None and embedded.sweeper is None  # nothing outlives this process
    finally:
        embedded.close()


def test_records_are_delivered_then_removed(journaled: Context) -> None:
    journal = journaled.journal
    assert journal is not None
    tallies = [Tally(data={"label": f"t{n}"}) for n in range(5)]
    for tally in tallies:
        tally.save()
        # each commit takes the records delivered before it along: at most the latest is left
        assert len(records(journaled)) <= 1
    deadline = time.monotonic() + 5
    while records(journaled) and time.monotonic() < deadline:  # an idle writer flushes its last one
        time.sleep(0.05)
    assert records(journaled) == {}


def test_a_record_left_by_a_dead_writer_is_delivered_by_a_sweep(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally(data={"label": "dies"})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
    cached = cached_revision(journaled, tally)
    assert cached == stored_revision(journaled, tally)
    # the writer dies right after its commit: its invalidations are never sent
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
    tally.count = 1
    killed_at = time.monotonic()
    tally.save()
    monkeypatch.undo()
    assert RECORD in {value[:1] for value in records(journaled).values()}
    assert cached_revision(journaled, tally) == cached  # stale: nobody has invalidated it yet
    while cached_revision(journaled, tally) == cached and time.monotonic() - killed_at < 5:
        time.sleep(0.02)
    stale_for = time.monotonic() - killed_at
    assert cached_revision(journaled, tally) != cached
    assert stale_for < 2.0, f"a dead writer's stale entry lasted {stale_for:.2f} s"
    assert journaled.stats["journal_delivered"] >= 1
    # marked delivered, and kept while its writer might still be learning its outcome
    assert SWEPT in records(journaled).values()
    assert RECORD not in {value[:1] for value in records(journaled).values()}
    fresh = journaled.__class__(journaled.persistent_url, journaled.volatile_url, journaled.namespace, None)
    try:
        assert fresh.load_document("tally", tally.guid) is not None
    finally:
        fresh.close()


def test_control_without_any_sweep_a_dead_writers_entry_stays_stale(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove the test above can fail: with no process sweeping, the stale entry stays."""
    assert journaled.sweeper is not None
    journaled.sweeper.stop()
    tally = Tally(data={"label": "unswept"})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
    cached = cached_revision(journaled, tally)
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
    tally.count = 1
    tally.save()
    monkeypatch.undo()
    time.sleep(2.0)
    assert cached_revision(journaled, tally) == cached


def test_old_markers_are_removed(journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = journaled.journal
    assert journal is not None
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
    Tally(data={"label": "marker"}).save()
    monkeypatch.undo()
    monkeypatch.setattr(journal_module, "GRACE", 0.0)
    assert journal.sweep() == (True, set())
    assert records(journaled) and set(records(journaled).values()) == {SWEPT}
    monkeypatch.setattr(journal_module, "TOMBSTONE_AGE", 0.0)
    assert journal.sweep() == (True, set())
    assert records(journaled) == {}


def test_the_journal_is_not_data(journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """dal check does not read it, and a namespace holding only records is empty to a copy."""
    monkeypatch.setattr(Journal, "_delivered", lambda self, key, invalidate: None)
    tally = Tally(data={"label": "checked"})
    tally.save()
    monkeypatch.undo()
    assert records(journaled)
    report = check(journaled)
    assert report.clean, report.problems
    Tally(tally.guid).delete()
    documents = journaled.persistent.scan(f"{journaled.keys.root}o/")
    assert documents == []


def test_a_failed_invalidation_keeps_the_record_until_a_sweep_delivers_it(
        journaled: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally(data={"label": "undelivered"})
    tally.save()
    assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0
    real = journaled.volatile.delete_many

    def refuse(keys: Sequence[str]) -> list[str]:
        return list(keys)

    monkeypatch.setattr(journaled.volatile, "delete_many", refuse)
    tally.count = 1
    tally.save()
    assert not journaled.objects.trust.trusted  # this process stops serving from the cache
    assert any(value[:1] == RECORD for value in records(journaled).values())
    assert Tally(tally.guid).count == 1  # read around the cache meanwhile
    monkeypatch.setattr(journaled.volatile, "delete_many", real)
    deadline = time.monotonic() + 5
    while not journaled.objects.trust.trusted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert journaled.objects.trust.trusted, "the sweep never caught up"
    assert journaled.stats["object_trust_restored"] >= 1
    assert cached_revision(journaled, tally) in (None, stored_revision(journaled, tally))
    assert Tally(tally.guid).count == 1
