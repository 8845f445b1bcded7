"""Cache administration does what it says, and says what it did.

``clean`` leaves a lock taken again after its listing; on a Redis that does not answer ``MEMORY
USAGE`` or ``OBJECT IDLETIME`` (fakeredis) entries are still sized and ``prune`` still removes
them; ``rm`` refuses a dynamic the hybrid does not declare and a guid that is none; ``queue``
refuses options that contradict each other; and the ``dal cache`` commands, ``prefetch`` but,
publish no statistics (``dal stats`` counts application processes only).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dal import DataObject, Dynamic, Property
from dal.backends.redis.cache import CACHE, STAMP
from dal.cache.stats import collect
from dal.cli import main
from dal.config import Context, configure, current
from dal.exceptions import DalError
from dal.tools import cache
from dal.tools.cache import removal


class HonestMeter(DataObject, hybrid_name="honestmeter"):
    """A cached object with a locked dynamic and a plain one."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __dynamics = [Dynamic("reading", int, 600, locked=True, lock_timeout=30), Dynamic("free", int, 600)]

    def _reading(self) -> int:
        return len(self.name)

    def _free(self) -> int:
        return 3


def _filled(context: Context, name: str = "kitchen") -> HonestMeter:
    """Save a meter and cache its document and its dynamic (a process not yet caught up with the
    journal reads without filling: read again until both are there)."""
    meter = HonestMeter(data={"name": name})
    meter.save()
    deadline = time.monotonic() + 5
    while not {"object", "dynamic"} <= {entry.kind for entry in cache.entries(context, hybrid="honestmeter")}:
        assert time.monotonic() < deadline, "the cache was never filled"
        assert HonestMeter(meter.guid).reading == len(name)
    return meter


def _stall(context: Context) -> None:
    """Wait until locks taken now are older than the stall time of the tests below (1 s) as a
    listing tells their age, from their expiry: memcached lists an expiry up to 2 s after it drops
    an entry (dal/backends/memcached/dumps.py), which keeps one up to 1 s past its TTL."""
    time.sleep(4.5 if context.volatile_url.scheme == "memcached" else 2.5)


@pytest.fixture(params=["memory", "memcached", "redis"])
def context(request: pytest.FixtureRequest, tmp_path: Path) -> Context:
    volatile = (f"memory://{uuid.uuid4().hex[:8]}" if request.param == "memory"
                else request.getfixturevalue(f"{request.param}_server").url)
    namespace = f"t{uuid.uuid4().hex[:12]}"
    return configure(f"sqlite:///{tmp_path / 'honest.sqlite3'}", volatile, namespace=namespace)


def test_clean_leaves_a_lock_taken_again_after_its_listing(context: Context,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled lock of a dead worker on another host is listed; right after the listing, it
    expires and a live worker there takes the lock again: clean must leave that one."""
    meter = HonestMeter(data={"name": "k"})
    meter.save()
    key = context.keys.cached_dynamic("honestmeter", meter.guid, "reading") + "/lock"
    store, signer = context.volatile, context.dynamics.signer
    assert store.add(key, signer.seal(key, os.urandom(8) + b"@otherhost:4242"), 30)
    _stall(context)  # older than the stall time below
    live = signer.seal(key, os.urandom(8) + b"@otherhost:999")
    real, listings = removal.entries, []

    def listing_then_taken_again(*args: Any, **kwargs: Any) -> list[cache.Entry]:
        found = real(*args, **kwargs)
        if not listings:
            store.delete(key)
            assert store.add(key, live, 30)
        listings.append(found)
        return found

    monkeypatch.setattr(removal, "entries", listing_then_taken_again)
    assert cache.clean(context, stall_time=1) == []
    assert store.gets(key)[0] == live, "clean removed a lock taken again since its listing"
    monkeypatch.undo()
    _stall(context)  # now that lock is stalled too, and nobody takes it again: removed
    assert cache.clean(context, stall_time=1) == [key]
    assert store.gets(key)[0] is None


def test_clean_does_not_wait_for_a_lock_released_after_its_read(context: Context,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stalled locks are read; the first one's owner releases it right after the read: clean
    removes the second and lists the namespace again once, not until RELIST_WAIT runs out."""
    store, signer, keys = context.volatile, context.dynamics.signer, []
    for number in range(2):
        meter = HonestMeter(data={"name": f"r{number}"})
        meter.save()
        key = context.keys.cached_dynamic("honestmeter", meter.guid, "reading") + "/lock"
        assert store.add(key, signer.seal(key, os.urandom(8) + b"@otherhost:4242"), 30)
        keys.append(key)
    _stall(context)  # older than the stall time below
    real_entries, real_read, listings = removal.entries, removal._read_stalled, []

    def counted(*args: Any, **kwargs: Any) -> list[cache.Entry]:
        listings.append(1)
        return real_entries(*args, **kwargs)

    def read_then_released(context: Context, entry: cache.Entry) -> object | None:
        token = real_read(context, entry)
        if entry.key == keys[0]:
            store.delete(entry.key)  # its owner finished right after the read
        return token

    monkeypatch.setattr(removal, "entries", counted)
    monkeypatch.setattr(removal, "_read_stalled", read_then_released)
    assert cache.clean(context, stall_time=1) == [keys[1]]
    assert len(listings) <= 3, f"{len(listings)} listings: waited for a lock that is gone"


def test_on_fakeredis_entries_are_sized_and_prune_removes_them(tmp_path: Path) -> None:
    """fakeredis answers neither MEMORY USAGE nor OBJECT IDLETIME: each entry is charged its key
    and stamped value, its last access is unknown, and prune(0) leaves no entry it could remove
    (it removed none, and said 0 bytes remained)."""
    context = configure(f"sqlite:///{tmp_path / 'fake.sqlite3'}", f"fakeredis://{uuid.uuid4().hex[:8]}",
                        namespace=f"t{uuid.uuid4().hex[:12]}")
    _filled(context)
    _filled(context, "hall")
    found = cache.entries(context)
    for entry in found:
        value = context.volatile.get(entry.key)
        assert value is not None
        assert entry.size == len((CACHE + entry.key).encode()) + STAMP + len(value), entry
        assert entry.last_access is None, entry
    assert [entry.size for entry in cache.entries(context, sort="size")] == sorted(
        (entry.size for entry in found), reverse=True)
    removable = [entry for entry in found if entry.kind in removal.REMOVABLE]
    pruned = cache.prune(context, 0)
    left = cache.entries(context)
    assert not [entry for entry in left if entry.kind in removal.REMOVABLE]
    assert (pruned.entries, pruned.bytes) == (len(removable), sum(entry.size for entry in removable))
    assert pruned.remaining == sum(entry.size for entry in left)


def _stores(tmp_path: Path, volatile: str = "memory://") -> tuple[Context, list[str]]:
    store = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    namespace = f"t{uuid.uuid4().hex[:12]}"
    return (configure(store, volatile, namespace=namespace),
            ["--persistent", store, "--volatile", volatile, "--namespace", namespace, "--hybrids", __name__])


def test_rm_refuses_a_dynamic_the_hybrid_does_not_declare_and_a_guid_that_is_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = configure(f"sqlite:///{tmp_path / 'a.sqlite3'}", f"memory://{uuid.uuid4().hex[:8]}",
                        namespace="honest")
    meter = _filled(context)
    with pytest.raises(DalError, match=r"honestmeter has no dynamic 'readng'; it has: reading, free"):
        cache.delete(context, hybrid="honestmeter", dynamic="readng")
    with pytest.raises(DalError, match=r"'nope' is not a guid"):
        cache.delete(context, hybrid="HonestMeter", guid="nope", dynamic="reading")
    assert len(cache.entries(context, hybrid="honestmeter", kind="dynamic")) == 1  # nothing deleted
    assert cache.delete(context, hybrid="honestmeter", guid=meter.guid, dynamic="reading") == 1
    context, stores = _stores(tmp_path)
    for wrong in (["--dynamic", "readng"], ["--guid", meter.guid[:-1]]):
        capsys.readouterr()
        assert main(["cache", "rm", "--hybrid", "honestmeter", *wrong, *stores]) == 2
        out, err = capsys.readouterr()
        assert err.startswith("error: ") and "deleted" not in out


@pytest.mark.parametrize("options", [["honestmeter.reading", "--where", "name=a", "--clear"],
                                     ["honestmeter.reading", "--clear"], ["--list", "--clear"],
                                     ["--list", "honestmeter.free"], ["--where", "name=a", "--list"]])
def test_queue_refuses_options_that_contradict_each_other(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str]) -> None:
    context, stores = _stores(tmp_path)
    _filled(context, "a")
    _filled(context, "b")
    assert cache.queue(context, "honestmeter", "reading") == 2
    assert cache.queue(context, "honestmeter", "free") == 2
    capsys.readouterr()
    assert main(["cache", "queue", *options, *stores]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "do not go together" in err and out == ""
    assert len(cache.queued(context)) == 4, "the queue is left as it was"
    assert main(["cache", "queue", "--clear", *stores]) == 0  # alone, it empties the whole queue
    assert cache.queued(context) == []


@pytest.mark.memcached
@pytest.mark.parametrize(("action", "publishes"), [
    (["ls"], False), (["rm", "--all"], False), (["prune", "--max-size", "0"], False), (["clean"], False),
    (["queue", "--list"], False), (["queue", "nosuch.reading"], False), (["prefetch"], True)])
def test_cache_commands_but_prefetch_publish_no_statistics(
        tmp_path: Path, memcached_server: Any, action: list[str], publishes: bool) -> None:
    """An administration run is no application process: it leaves no snapshot (``dal stats`` would
    count it as a process reporting for a day), refused or not. ``prefetch`` computes dynamics as an
    application does, and publishes their counts."""
    setup, stores = _stores(tmp_path, memcached_server.url)
    assert setup.publisher is not None
    setup.publisher.withdraw()  # the test's own context publishes nothing either
    main(["cache", *action, *stores])
    ran = current()
    ran.stats.add("probe", 1)
    assert ran.publisher is not None
    ran.publisher.flush()  # as the command's exit would
    reader = configure(stores[1], stores[3], namespace=stores[5])
    published = collect(reader, reader=True).processes[:-1]  # but the reader's own
    assert [snapshot["counters"].get("probe") for snapshot in published] == ([1] if publishes else [])
