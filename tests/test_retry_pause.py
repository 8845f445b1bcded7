"""A commit that lost a race is retried on the document stored after its pause, not before it.

The interleaving is injected: another writer saves the same object before the first commit, before
the immediate retry and during every pause, as a writer saving every few milliseconds does. Planned
on the document read before the pause, every retry lost again and the save (or delete) gave up with
RaceConditionError, although each merge on its own commits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dal import DataObject, Property
from dal.config import Context
from dal.objects import writes


class Tally(DataObject, hybrid_name="rptally"):
    """Two fields two writers change."""

    __properties: list[Property[Any]] = [Property("name", str), Property("count", int, default=0),
                                         Property("note", str, mandatory=False)]


@pytest.fixture
def other_writer(local: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Tally], list[int]]]:
    """Arrange for another instance of a tally to save a new ``count`` before the first two commits
    of the tally given and during every pause; return the counts it saved."""
    saved: list[int] = []
    counts = itertools.count(1)
    busy = False

    def other_saves(guid: str) -> None:
        nonlocal busy
        busy = True
        try:
            other = Tally(guid)
            other.count = next(counts)
            other.save()
            saved.append(other.count)
        finally:
            busy = False

    def arm(tally: Tally) -> list[int]:
        commit = local.persistent.commit
        first = [0]

        def commit_after_another(checks: Any, ops: Any) -> Any:
            if not busy and first[0] < 2:
                first[0] += 1
                other_saves(tally.guid)
            return commit(checks, ops)

        monkeypatch.setattr(local.persistent, "commit", commit_after_another)
        monkeypatch.setattr(writes.time, "sleep", lambda seconds: other_saves(tally.guid))
        return saved

    yield arm


def test_a_save_retried_after_a_pause_merges_what_was_saved_during_it(
        local: Context, other_writer: Callable[[Tally], list[int]]) -> None:
    tally = Tally(data={"name": "w"})
    tally.save()
    saved = other_writer(tally)
    tally.note = "mine"
    tally.save()
    assert len(saved) >= 3  # before the commit, before the immediate retry, during the pause
    stored = Tally(tally.guid)
    assert (stored.note, stored.count) == ("mine", saved[-1])


def test_a_delete_retried_after_a_pause_deletes(local: Context,
                                                other_writer: Callable[[Tally], list[int]]) -> None:
    tally = Tally(data={"name": "w"})
    tally.save()
    saved = other_writer(tally)
    tally.delete()
    assert len(saved) >= 3
    assert list(Tally.where(Tally.name == "w")) == []
