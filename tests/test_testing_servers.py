"""The servers dal's test tools start: a port another process's server holds is never taken for the
one started, and a group of servers that cannot all start leaves none of them running."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dal.testing import fixtures, servers
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import RunningServer, ServerUnavailable, start_etcd, start_memcached, start_redis

STARTERS: dict[str, Callable[..., RunningServer]] = {
    "etcd": start_etcd, "memcached": start_memcached, "redis": start_redis}


@pytest.fixture(params=sorted(STARTERS))
def theirs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """Another process's server of the kind under test, holding its port."""
    starter = STARTERS[request.param]
    server = start_or_skip(request.param, lambda: starter(tmp_path / "theirs"))
    try:
        yield server
    finally:
        server.stop()


def _kind(server: RunningServer) -> str:
    return server.url.partition(":")[0]


def test_a_pinned_port_another_server_holds_is_refused(theirs: RunningServer, tmp_path: Path) -> None:
    started: list[RunningServer] = []
    try:
        with pytest.raises(ServerUnavailable, match=rf"on port {theirs.port}\b"):
            started.append(STARTERS[_kind(theirs)](tmp_path / "ours", port=theirs.port))
    finally:
        for server in started:  # before the fix: their server, returned as ours
            server.stop()
    assert theirs.process.poll() is None, "their server is left alone"


def test_a_port_taken_since_it_was_picked_is_left_for_another(
        theirs: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As when a parallel suite takes the port between free_port() and the launch."""
    picks = iter([theirs.port])
    real_free_port = servers.free_port
    monkeypatch.setattr(servers, "free_port", lambda: next(picks, None) or real_free_port())
    ours = STARTERS[_kind(theirs)](tmp_path / "ours")
    try:
        assert ours.port != theirs.port, "their server was taken for ours"
        assert ours.process.poll() is None, "the process returned is the one serving"
    finally:
        ours.stop()
    assert theirs.process.poll() is None


def _sleeper(workdir: Path) -> RunningServer:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return RunningServer("memcached://127.0.0.1:1", "127.0.0.1", 1, process, workdir, workdir / "log")


def test_memcached_servers_stops_those_started_when_a_later_one_cannot_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[RunningServer] = []

    def start(workdir: Path) -> RunningServer:
        if started:
            raise ServerUnavailable("simulated: the second memcached cannot start")
        started.append(_sleeper(workdir))
        return started[-1]

    monkeypatch.setattr(fixtures, "start_memcached", start)
    monkeypatch.delenv("DAL_REQUIRE_SERVICES", raising=False)
    try:
        with pytest.raises(pytest.skip.Exception, match="simulated"), fixtures.memcached_servers(tmp_path, 3):
            pytest.fail("three memcached servers cannot start here")
        assert len(started) == 1
        assert started[0].process.poll() is not None, "the first memcached is still running"
    finally:
        for server in started:
            server.stop()
