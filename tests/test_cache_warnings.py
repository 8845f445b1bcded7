"""What a process says when memcached stops taking invalidations: once per outage, once when it ends."""

from __future__ import annotations

import logging
import re
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hybrids import Kind

import dal
import dal.cache.leases
import dal.cache.trust
from dal.backends.base import DeletePrefix
from dal.backends.memory import MemoryCache
from dal.backends.url import parse_url
from dal.cache.leases import LeasedCache, Signer, Stats
from dal.config import Context
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, closed_port, start_memcached

OUTAGE = re.compile(r"could not invalidate (\d+) cache entries on (\S+); reading around it")
RECOVERED = re.compile(r"(\S+) answers again; (\d+) invalidations failed meanwhile, all delivered since")


def said(caplog: pytest.LogCaptureFixture, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    """Return the matches of ``pattern`` among the warnings dal.cache logged."""
    found = (pattern.search(record.getMessage()) for record in caplog.records
             if record.name == "dal.cache" and record.levelno == logging.WARNING)
    return [match for match in found if match]


def save_kinds(count: int, tag: str) -> None:
    for n in range(count):
        Kind(data={"name": f"{tag}{n}", "code": f"{tag}-{n}"}).save()


@pytest.fixture
def private_memcached(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_or_skip("a private memcached", lambda: start_memcached(tmp_path / "memcached"))
    try:
        yield server
    finally:
        server.stop()


def test_a_long_outage_of_a_dead_memcached_is_reported_once(
        tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    context = dal.configure(f"sqlite:///{tmp_path / 'dal.sqlite3'}", f"memcached://127.0.0.1:{port}?timeout=0.1",
                            namespace=namespace)
    # the outage lasts hours as far as the cache's clock goes: every look at it is a minute later
    clock = iter(range(60, 10**9, 60))
    monkeypatch.setattr(dal.cache.trust, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    caplog.set_level(logging.WARNING, logger="dal.cache")
    try:
        save_kinds(20, "dead")
        outages = said(caplog, OUTAGE)
        assert len(outages) == 1, [record.getMessage() for record in caplog.records]
        assert outages[0].group(2) == f"memcached://127.0.0.1:{port}"
        assert not said(caplog, RECOVERED)
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
        context.close()


def _wait_for(caplog: pytest.LogCaptureFixture, pattern: re.Pattern[str], count: int) -> list[re.Match[str]]:
    deadline = time.monotonic() + 15
    while len(said(caplog, pattern)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return said(caplog, pattern)


@pytest.mark.memcached
def test_memcached_coming_back_is_reported_once_with_what_failed_meanwhile(
        tmp_path: Path, namespace: str, private_memcached: RunningServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dal.cache")
    server = private_memcached
    # the server is stopped, never paused: it refuses at once, so the timeout only bounds the live
    # server, and a short one made a loaded host's slow answer a second outage
    context: Context = dal.configure(f"sqlite:///{tmp_path / 'dal.sqlite3'}", f"{server.url}?timeout=5",
                                     namespace=namespace)
    name = f"memcached://{server.host}:{server.port}"
    try:
        save_kinds(2, "before")
        assert not said(caplog, OUTAGE)
        server.stop()
        failures_before = context.stats["object_invalidation_errors"]
        save_kinds(10, "during")
        outages = said(caplog, OUTAGE)
        assert [match.group(2) for match in outages] == [name], caplog.text
        assert context.stats["object_invalidation_errors"] - failures_before >= 10  # every save failed
        restarted = start_memcached(server.workdir, port=server.port)
        try:
            recovered = _wait_for(caplog, RECOVERED, 1)  # the journal's sweep catches up within a second
            assert [match.group(1) for match in recovered] == [name], caplog.text
            assert int(recovered[0].group(2)) >= 10  # at least each save's cached document
            assert len(said(caplog, OUTAGE)) == 1
            save_kinds(3, "after")
            assert len(said(caplog, OUTAGE)) == 1 and len(said(caplog, RECOVERED)) == 1
            restarted.stop()  # a second outage is a new one: reported again, and its end too
            save_kinds(3, "again")
            assert len(said(caplog, OUTAGE)) == 2
            again = start_memcached(server.workdir, port=server.port)
            try:
                assert len(_wait_for(caplog, RECOVERED, 2)) == 2, caplog.text
            finally:
                again.stop()
        finally:
            restarted.stop()
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
        context.close()


class _Unplugged(MemoryCache):
    """A cache whose deletes fail while ``down``."""

    def __init__(self) -> None:
        super().__init__(parse_url("memory://unplugged"))
        self.down = False

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        return list(keys) if self.down else super().delete_many(keys)


def test_an_outage_ends_only_once_the_resent_invalidations_are_delivered(
        caplog: pytest.LogCaptureFixture) -> None:
    """Invalidations outside a commit are resent by the process itself: the outage lasts until they land."""
    caplog.set_level(logging.WARNING, logger="dal.cache")
    store = _Unplugged()
    cache = LeasedCache(store, Signer(None), Stats())
    store.down = True
    assert cache.invalidate("a", "b") == ["a", "b"]
    assert cache.invalidate("c") == ["c"]
    time.sleep(3 * dal.cache.leases.RESEND_INTERVAL)  # resends fail meanwhile: still the same outage
    outages = said(caplog, OUTAGE)
    assert [(match.group(1), match.group(2)) for match in outages] == [("2", "memory://unplugged")]
    assert not said(caplog, RECOVERED) and cache.pending == {"a", "b", "c"}
    store.down = False
    recovered = _wait_for(caplog, RECOVERED, 1)
    assert [(match.group(1), match.group(2)) for match in recovered] == [("memory://unplugged", "3")]
    assert not cache.pending
    cache.close()
