"""What SQLite cannot take, whatever its state: a key or value past its length limit, a key UTF-8
cannot encode. Each is refused with the error every store gives it, nothing written, never a raw
``OverflowError``, ``sqlite3.DataError`` or ``UnicodeEncodeError``.

SQLite's limit is 1,000,000,000 bytes by default (``SQLITE_MAX_LENGTH``): the tests lower it on the
test thread's connection (``Connection.setlimit``) rather than allocate a gigabyte.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from dal import DataObject, Property, configure
from dal.backends.base import Entry, Put, RefusedError, Revision, TooLargeError
from dal.backends.sqlite import SqliteStore
from dal.backends.sqlite.refusals import refused
from dal.backends.url import parse_url
from dal.exceptions import InvalidValueError

LIMIT = 10_000

needs_setlimit = pytest.mark.skipif(not hasattr(sqlite3.Connection, "setlimit"),
                                    reason="Connection.setlimit came with Python 3.11")


class LimitThing(DataObject):
    __properties = [Property("name", str), Property("notes", str, default="")]
    __relations: list = []
    __dynamics: list = []


def limited(store: SqliteStore) -> SqliteStore:
    """Lower SQLite's length limit on this thread's connection of ``store`` to LIMIT bytes."""
    store._conn().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, LIMIT)
    return store


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore.from_url(parse_url(f"sqlite:///{tmp_path / 'dal.sqlite3'}"))


@needs_setlimit
def test_a_value_past_sqlites_length_limit_is_a_too_large_error_and_nothing_is_written(
        store: SqliteStore) -> None:
    first = store.commit([], [Put("a", b"small")]).revision
    limited(store)
    with pytest.raises(TooLargeError, match=r"the value of 'big' holds 10,001 bytes: SQLite takes at most "
                                            r"10,000 bytes in one entry.*nothing was written") as caught:
        store.commit([], [Put("a", b"changed"), Put("big", b"x" * (LIMIT + 1))])
    assert "SQLITE_MAX_LENGTH: 1,000,000,000 bytes" in str(caught.value)
    assert isinstance(caught.value, RefusedError) and caught.value.nothing_written
    assert store.get("a") == Entry(b"small", first) and store.get("big") is None
    assert store.commit([], [Put("next", b"v")]).revision == first + 1  # the refused one took no revision


@needs_setlimit
def test_a_key_and_value_together_past_the_limit_are_a_too_large_error(store: SqliteStore) -> None:
    # each under the limit, the row they make over it: SQLite's own SQLITE_TOOBIG, typed the same
    limited(store)
    with pytest.raises(TooLargeError, match="string or blob too big: SQLite takes at most 10,000 bytes"):
        store.commit([], [Put("k" * 6000, b"x" * 6000)])
    with pytest.raises(TooLargeError):  # a key alone too
        store.get("k" * (LIMIT + 1))
    assert store.scan("") == []


def test_a_value_of_2_gib_or_more_is_a_too_large_error() -> None:
    # what Python's sqlite3 raises binding a blob (or text) of 2 GiB or more, where SQLite's limit
    # could never be met: mapped alike (the commit refuses a value past the limit before binding it)
    conn = sqlite3.connect(":memory:")
    error = refused(OverflowError("BLOB longer than INT_MAX bytes"), "sqlite commit to x failed", conn)
    assert isinstance(error, TooLargeError)
    assert "2 GiB or more: SQLite takes at most 1,000,000,000 bytes" in str(error)
    assert refused(OverflowError("Python int too large to convert to SQLite INTEGER"), "", conn) is None


@needs_setlimit
def test_saving_an_object_past_the_limit_is_a_too_large_error_and_the_next_save_works(
        tmp_path: Path) -> None:
    # the mirror records a TooLargeError as the object's failure; any other BackendError as the store's
    context = configure(f"sqlite:///{tmp_path / 'dal.sqlite3'}", "memory://",
                        namespace=f"t{uuid.uuid4().hex[:8]}")
    thing = LimitThing(name="one")
    thing.save()
    limited(context.persistent)  # type: ignore[arg-type]
    thing.notes = "x" * LIMIT
    with pytest.raises(TooLargeError, match="nothing was written"):
        thing.save()
    thing.notes = "small"
    thing.save()
    assert LimitThing(thing.guid).notes == "small"


@pytest.mark.parametrize("call", ["get", "get_many", "scan", "put", "check", "leadership"])
def test_a_key_with_a_lone_surrogate_is_an_invalid_value(store: SqliteStore, call: str) -> None:
    key = "p/\ud800"
    calls = {"get": lambda: store.get(key), "get_many": lambda: store.get_many([key]),
             "scan": lambda: store.scan(key), "put": lambda: store.commit([], [Put(key, b"v")]),
             "check": lambda: store.commit([Revision(key, 0)], [Put("ok", b"v")]),
             "leadership": lambda: store.acquire_leadership(key, "owner", 5)}
    with pytest.raises(InvalidValueError, match="surrogate '\\\\ud800'"):
        calls[call]()
    assert store.get("ok") is None
    assert store.commit([], [Put("ok", b"v")]).revision == 1  # nothing was written, no revision taken
