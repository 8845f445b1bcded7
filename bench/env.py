"""What a benchmark runs against: the settings of this run and the throwaway servers it started."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.timing import progress
from dal.backends import close_all
from dal.testing.servers import RunningServer, start_etcd, start_memcached

ETCD = "etcd"
MEMCACHED = "memcached"


@dataclass(frozen=True)
class Settings:
    """How much to run: full runs for numbers, ``quick`` ones to check that everything works."""

    quick: bool = False
    rounds: int = 5
    profile: bool = False

    def ops(self, full: int, quick: int | None = None) -> int:
        """Return the operations per round of a benchmark sized ``full`` for a full run.

        A quick run does ``quick`` operations when given (for benchmarks whose operations
        are long), else a 25th of ``full`` and at least 20.
        """
        if not self.quick:
            return full
        return quick if quick is not None else max(full // 25, 20)


@dataclass(frozen=True)
class Environment:
    """The servers and scratch directory of one ``python -m bench`` run."""

    workdir: Path
    etcd: RunningServer | None = None
    memcached: RunningServer | None = None

    def need_etcd(self) -> RunningServer:
        if self.etcd is None:
            raise RuntimeError("this benchmark needs etcd, which was not started")
        return self.etcd

    def need_memcached(self) -> RunningServer:
        if self.memcached is None:
            raise RuntimeError("this benchmark needs memcached, which was not started")
        return self.memcached

    @staticmethod
    def namespace() -> str:
        """Return a fresh dal namespace, so no benchmark reads another's data."""
        return f"bench{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def environment(servers: Collection[str]) -> Iterator[Environment]:
    """Start the named servers on free loopback ports in a temporary directory; stop them after.

    Raises ``dal.testing.servers.ServerUnavailable`` when a binary is missing or a server
    does not start.
    """
    with tempfile.TemporaryDirectory(prefix="dal-bench-") as scratch, contextlib.ExitStack() as stack:
        workdir = Path(scratch)
        running: dict[str, RunningServer] = {}
        for kind, start in ((ETCD, start_etcd), (MEMCACHED, start_memcached)):
            if kind in servers:
                server = start(workdir / kind)
                stack.callback(server.stop)
                running[kind] = server
                progress(f"started {kind} at {server.host}:{server.port}")
        # registered last, so it runs first: clients go before the servers they talk to
        stack.callback(close_all)
        yield Environment(workdir, running.get(ETCD), running.get(MEMCACHED))
