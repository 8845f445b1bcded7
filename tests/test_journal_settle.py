"""A commit whose outcome was learnt later delivers every invalidation of its record, and leaves the
record to the sweeps until they all reached the shared cache (``dal/cache/journal.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import PairURLs, cached_document, persistent_url_for, volatile_url_for
from race_hybrids import Tally
from test_commit_outcome import LostAnswers
from test_journal import records, sweep_of

import dal
from dal.backends.base import DeletePrefix
from dal.cache.journal import RECORD
from dal.config import Context
from dal.exceptions import CommitOutcomeUnknownError


@pytest.fixture(params=[("redis", "memcached")], ids=["redis+memcached"])
def urls(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[PairURLs]:
    """A store that can lose answers, and memcached."""
    persistent = persistent_url_for(request.param[0], request, tmp_path) + "?timeout=1"
    yield PairURLs(persistent, volatile_url_for(request.param[1], request), namespace)


@pytest.fixture
def shared(urls: PairURLs) -> Iterator[Context]:
    context = urls.configure()
    yield context
    context.close()
    urls.configure().persistent.commit([], [DeletePrefix(context.keys.root)])


def cached_count(context: Context, tally: Tally) -> int | None:
    cached = cached_document(context, "tally", tally.guid)
    return None if cached is None else int(cached[1]["count"])


def cached_tallies(*labels: str) -> list[Tally]:
    tallies = [Tally(data={"label": label, "count": 0}) for label in labels]
    dal.save_many(tallies)
    for tally in tallies:
        assert Tally(tally.guid).count == 0 and Tally(tally.guid).count == 0  # cached now
    return tallies


def refuse_deletes(context: Context, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Make memcached refuse this process's deletes while the returned switch is on."""
    cache = context.objects
    real = cache._delete
    down = {"on": True}

    def failing(keys: Sequence[str]) -> dict[str, list[str]]:
        if not down["on"]:
            return real(list(keys))
        by_node: dict[str, list[str]] = {}
        for key in keys:
            for node in cache.placement.holders(key):
                by_node.setdefault(node, []).append(key)
        return by_node

    monkeypatch.setattr(cache, "_delete", failing)
    return down


def unknown_commit(context: Context, monkeypatch: pytest.MonkeyPatch, save: Any) -> LostAnswers:
    """Apply ``save()`` and lose its answer until the deadline; the store answers again after."""
    lost = LostAnswers(context, monkeypatch)
    lost.plan = ["applied"] + ["down"] * 1000
    with pytest.raises(CommitOutcomeUnknownError):
        save()
    lost.plan = []
    return lost


def test_a_settle_whose_invalidation_failed_leaves_the_record_for_a_sweep(
        shared: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = sweep_of(shared)
    (tally,) = cached_tallies("settled")
    down = refuse_deletes(shared, monkeypatch)
    mine = Tally(tally.guid)
    mine.count = 1
    unknown_commit(shared, monkeypatch, mine.save)
    mine.save()  # learns that it was applied; memcached still refuses this process
    assert [value[:1] for value in records(shared).values()] == [RECORD], "marked though undelivered"
    down["on"] = False
    sweep.catch_up()  # memcached answers again: the record is delivered
    assert cached_count(shared, tally) in (None, 1)
    assert Tally(tally.guid).count == 1


def test_settling_one_object_of_a_save_many_invalidates_them_all(
        shared: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep_of(shared)  # no sweep comes between the commit and the settle
    a, b = cached_tallies("a", "b")
    down = refuse_deletes(shared, monkeypatch)
    a.count, b.count = 1, 1
    unknown_commit(shared, monkeypatch, lambda: dal.save_many([a, b]))
    down["on"] = False
    a.save()  # settles the commit of both
    assert cached_count(shared, b) is None, "the other object's entry stayed stale"
