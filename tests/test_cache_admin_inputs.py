"""Cache administration on inputs it once took wrongly: memcached keys with characters memcached
cannot take (a namespace with a space, non-ASCII, over 250 bytes), a mistyped store, a hybrid's
class name or an unknown one, and a NaN stall time or size.

memcached keys of plain characters keep their wire form (a rolling upgrade shares one keyspace);
others are percent-encoded, injective and read back by ``dal cache ls``; keys still too long are
hashed, listed as such, and reported as left by ``rm`` and ``prune``.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dal import DataObject, Dynamic, Property
from dal.backends.memcached import logical_key, wire_key
from dal.cli import main
from dal.config import Context, configure
from dal.exceptions import DalError
from dal.testing.servers import RunningServer
from dal.tools import cache


class InputGauge(DataObject, hybrid_name="inputgauge"):
    """A cached object with a cached dynamic."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("reading", int, 600)]

    def _reading(self) -> int:
        return len(self.name)


def _filled(context: Context) -> InputGauge:
    """Save a gauge and cache its document and its dynamic (a process not yet caught up with the
    journal reads without filling: read again until both are there)."""
    gauge = InputGauge(data={"name": "kitchen"})
    gauge.save()
    deadline = time.monotonic() + 5
    while not (_held(context, gauge, "reading") and _held(context, gauge)):
        assert time.monotonic() < deadline, "the cache was never filled"
        assert InputGauge(gauge.guid).reading == 7
    return gauge


def _held(context: Context, gauge: InputGauge, dynamic: str | None = None) -> bool:
    """Tell whether the store holds the gauge's document (or ``dynamic``'s value), read raw."""
    key = (context.keys.cached_doc("inputgauge", gauge.guid) if dynamic is None
           else context.keys.cached_dynamic("inputgauge", gauge.guid, dynamic))
    return context.volatile.get(key) is not None


def _listing(context: Context, count: int) -> list[cache.Entry]:
    """Return the namespace's entries once ``count`` are listed (3 s at most): memcached's crawler
    does not always see an item written a moment ago."""
    deadline = time.monotonic() + 3
    published = context.keys.published_stats()
    while True:
        # not the counters a context of this test process published as it was replaced
        found = [entry for entry in cache.entries(context) if not entry.key.startswith(published)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _until_gone(context: Context, gauge: InputGauge, remove: Callable[[], int]) -> None:
    """Remove again until neither the gauge's document nor its dynamic is held (3 s at most): one
    crawl of a fresh memcached can miss an item written a moment ago, a second one lists it."""
    deadline = time.monotonic() + 3
    while _held(context, gauge) or _held(context, gauge, "reading"):
        assert time.monotonic() < deadline, "an entry of the namespace was never listed and removed"
        remove()
        time.sleep(0.05)


def _memcached(server: RunningServer, store: Path, namespace: str) -> Context:
    return configure(f"sqlite:///{store}", f"{server.url}?timeout=2", namespace=namespace)


# --- wire keys -------------------------------------------------------------------------------


def test_plain_keys_keep_their_wire_form_and_others_are_encoded_injectively_and_read_back() -> None:
    plain = "t1/c/0123456789/o/inputgauge/6f1c"
    assert wire_key(plain) == plain == logical_key(plain)
    long_plain = "x" * 300  # hashed exactly as before: its first 64 characters, "~", its SHA-256
    assert wire_key(long_plain) == f"{'x' * 64}~{hashlib.sha256(long_plain.encode()).hexdigest()}"
    keys = ["my app/o/a", "my_app/o/a", "my%20app/o/a", "ключ/o/a", "a~b", "100%", "tab\t", "\udc80x"]
    wired = [wire_key(key) for key in keys]
    assert len(set(wired)) == len(keys)  # "my app" and "my_app" no longer meet in one wire form
    for key, sent in zip(keys, wired, strict=True):
        assert 0 < len(sent) <= 250 and all(0x21 <= ord(char) <= 0x7D for char in sent), sent
        assert logical_key(sent) == key
    assert wire_key("my app/o/a") == "my%20app/o/a"


def test_a_key_still_too_long_is_hashed_and_shows_its_encoded_start() -> None:
    key = "my app/" + "y" * 300
    sent = wire_key(key)
    assert sent.startswith("my%20app/yyy") and "~" in sent and len(sent) <= 250
    assert logical_key(sent) is None  # cannot be read back
    assert wire_key("") != "" and logical_key(wire_key("")) is None


# --- namespaces memcached cannot take as they are (a real memcached) --------------------------


@pytest.mark.parametrize("spelling", ["my app", "ключ"])
def test_ls_rm_and_prune_see_a_namespace_with_unsafe_characters_and_not_its_lookalike(
        memcached_server: RunningServer, tmp_path: Path, spelling: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    store = tmp_path / "a.sqlite3"
    lookalike = _memcached(memcached_server, store, f"my_app{suffix}")  # the same durable store
    other = _filled(lookalike)
    context = _memcached(memcached_server, store, f"{spelling}{suffix}")
    gauge = _filled(context)
    found = _listing(context, 2)
    assert {(entry.kind, entry.guid) for entry in found} == {("object", gauge.guid), ("dynamic", gauge.guid)}
    assert all(entry.key.startswith(context.keys.cache_root) and not entry.hashed for entry in found)
    assert cache.delete(context, everything=True) >= 1  # before: 0, and the entries stayed
    _until_gone(context, gauge, lambda: cache.delete(context, everything=True))
    _filled(context)
    _listing(context, 2)
    assert cache.prune(context, 0).entries >= 1
    _until_gone(context, gauge, lambda: cache.prune(context, 0).entries)
    # the lookalike namespace's entries were neither listed nor deleted with these
    assert _held(lookalike, other, "reading") and _held(lookalike, other)
    assert {entry.guid for entry in _listing(lookalike, 2)} == {other.guid}


def test_entries_under_hashed_keys_are_listed_as_such_and_reported_as_left(
        memcached_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = f"long {uuid.uuid4().hex[:8]} " + "n" * 240  # every key over 250 bytes: all hashed
    context = _memcached(memcached_server, tmp_path / "a.sqlite3", namespace)
    gauge = _filled(context)
    found = _listing(context, 2)
    assert len(found) == 2 and all(entry.hashed and entry.kind == "other" for entry in found)
    # a crawl is no snapshot: an item moving between memcached's LRUs meanwhile can be missed by one,
    # so the counts below are "some", never "none" (what was reported before)
    assert cache.delete_report(context, everything=True).entries == 0
    assert cache.delete_report(context, everything=True).hashed >= 1
    assert cache.prune(context, 0).hashed >= 1
    assert _held(context, gauge, "reading") and _held(context, gauge)  # left, as reported
    stores = ["--persistent", f"sqlite:///{tmp_path / 'a.sqlite3'}", "--volatile",
              f"{memcached_server.url}?timeout=2", "--namespace", namespace, "--hybrids", __name__]
    capsys.readouterr()
    assert main(["cache", "rm", "--all", *stores]) == 1  # not the removal asked for: not success
    out, err = capsys.readouterr()
    assert "deleted 0 entries" in out, out
    assert re.search(r"[1-9][0-9]* entries are stored under hashed keys", err), err
    assert main(["cache", "prune", "--max-size", "0", *stores]) == 1


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("action", [["rm", "--all"], ["ls"], ["prune", "--max-size", "0"], ["clean"],
                                    ["queue", "--list"]])
def test_a_mistyped_store_is_refused_and_not_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]) -> None:
    missing = tmp_path / "mistyped.sqlite3"
    code = main(["cache", *action, "--persistent", f"sqlite:///{missing}", "--volatile", "memory://",
                 "--hybrids", __name__])
    assert code == 2 and capsys.readouterr().err.startswith("error: ")
    assert not missing.exists()


def test_queue_of_an_unknown_hybrid_is_a_typed_error(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    configure(store, "memory://", namespace="inputs")  # creates the store
    code = main(["cache", "queue", "nosuch.reading", "--persistent", store, "--volatile", "memory://",
                 "--namespace", "inputs", "--hybrids", __name__])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no hybrid named 'nosuch'") and "inputgauge" in err


# --- hybrids by class name, or unknown -------------------------------------------------------


def test_a_hybrid_is_named_by_its_logical_or_class_name_and_an_unknown_one_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    context = configure(store, f"memory://{uuid.uuid4().hex[:8]}", namespace="inputs")
    gauge = _filled(context)
    assert {entry.guid for entry in cache.entries(context, hybrid="InputGauge")} == {gauge.guid}
    assert cache.delete(context, hybrid="InputGauge", guid=gauge.guid) == 2
    assert not _held(context, gauge, "reading")
    for name in ("nosuch", "inputGauge"):
        with pytest.raises(DalError, match=r"no hybrid named .*known: .*inputgauge"):
            cache.delete(context, hybrid=name)
        with pytest.raises(DalError, match="no hybrid named"):
            cache.entries(context, hybrid=name)
    code = main(["cache", "ls", "--hybrid", "nosuch", "--persistent", store, "--volatile", "memory://",
                 "--namespace", "inputs", "--hybrids", __name__])
    assert code == 2 and capsys.readouterr().err.startswith("error: no hybrid named 'nosuch'")


# --- non-finite numbers ----------------------------------------------------------------------


def test_clean_and_prune_refuse_a_stall_time_or_size_that_is_not_a_finite_number(tmp_path: Path) -> None:
    context = configure(f"sqlite:///{tmp_path / 'a.sqlite3'}", f"memory://{uuid.uuid4().hex[:8]}",
                        namespace="inputs")
    gauge = _filled(context)
    lock = context.keys.cached_dynamic("inputgauge", gauge.guid, "reading") + "/lock"
    context.volatile.set(lock, b"12345678@otherhost:4242", 30)  # another host's computation, just begun
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(DalError, match="stall_time must be"):
            cache.clean(context, stall_time=bad)
        with pytest.raises(DalError, match="max_size must be"):
            cache.prune(context, bad)  # type: ignore[arg-type]
    assert context.volatile.get(lock) is not None and _held(context, gauge, "reading")
    huge = 10 ** 400  # an int too large for a float is still a number of bytes or seconds
    assert cache.prune(context, huge).entries == 0
    assert cache.clean(context, stall_time=huge) == []
    store = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    assert main(["cache", "clean", "--stall-time", "nan", "--persistent", store, "--volatile", "memory://",
                 "--namespace", "inputs", "--hybrids", __name__]) == 2


def test_arguments_of_the_wrong_type_are_typed_errors_and_change_nothing(tmp_path: Path) -> None:
    """Python callers of ``dal.tools.cache`` get a DalError saying what is expected for an argument of
    the wrong type (a string for a number, a list of pairs for ``where``), never a TypeError or an
    AttributeError from inside, and nothing is removed or queued."""
    context = configure(f"sqlite:///{tmp_path / 'a.sqlite3'}", f"memory://{uuid.uuid4().hex[:8]}",
                        namespace="inputs")
    gauge = _filled(context)
    before = sorted(entry.key for entry in cache.entries(context))
    calls: list[tuple[str, Callable[[], object]]] = [
        ("limit must be a whole number", lambda: cache.entries(context, limit=2.5)),  # type: ignore[arg-type]
        ("limit must be a whole number", lambda: cache.entries(context, limit="3")),  # type: ignore[arg-type]
        ("kind must be a cache entry kind", lambda: cache.entries(context, kind=5)),  # type: ignore[arg-type]
        ("unknown cache entry kind 5", lambda: cache.entries(context, kind=[5])),  # type: ignore[list-item]
        ("max_size must be a number of bytes", lambda: cache.prune(context, "100")),  # type: ignore[arg-type]
        ("max_size must be a number of bytes", lambda: cache.prune(context, None)),  # type: ignore[arg-type]
        ("stall_time must be a number of seconds",
         lambda: cache.clean(context, stall_time="60")),  # type: ignore[arg-type]
        ("where must map field names to values",
         lambda: cache.queue(context, "inputgauge", "reading", where=[("name", "kitchen")])),  # type: ignore[arg-type]
        ("workers must be a whole number", lambda: cache.prefetch(context, workers=1.5)),  # type: ignore[arg-type]
        ("has no dynamic \\['reading'\\]",
         lambda: cache.queue(context, "inputgauge", ["reading"])),  # type: ignore[arg-type]
        ("has no dynamic \\['reading'\\]",
         lambda: cache.delete(context, hybrid="inputgauge", dynamic=["reading"])),  # type: ignore[arg-type]
        ("name a hybrid by its logical or class name", lambda: cache.delete(context, hybrid=["inputgauge"])),  # type: ignore[arg-type]
        ("name a hybrid by its logical or class name", lambda: cache.entries(context, hybrid=["inputgauge"])),  # type: ignore[arg-type]
        ("queue items are a list of Queued", lambda: cache.add(context, "x")),  # type: ignore[arg-type]
        ("queue items are a list of Queued",
         lambda: cache.remove(context, [("inputgauge", gauge.guid, "reading")])),  # type: ignore[list-item]
        ("has no dynamic \\['reading'\\]", lambda: cache.is_cached(gauge, ["reading"])),  # type: ignore[arg-type]
        ("has no dynamic 'readng'", lambda: cache.is_cached(gauge, "readng")),
        ("takes an object of a hybrid", lambda: cache.is_being_cached("gauge", "reading")),
    ]
    for said, call in calls:
        with pytest.raises(DalError, match=said):
            call()
    assert sorted(entry.key for entry in cache.entries(context)) == before
    assert _held(context, gauge, "reading")
    assert cache.queued(context) == []
