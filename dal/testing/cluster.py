"""Start a throwaway multi-member etcd cluster on loopback, for fault tests.

Members elect fast (50 ms heartbeats, 500 ms election timeout), so a test that kills or
freezes the leader sees a new one within a second or two instead of the default several.
Each member has its own directory under the cluster's work directory, holding its data
and its log; every process started is stopped by its PID in :meth:`EtcdCluster.stop`.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from pyetcd import etcdrpc

from dal.testing.servers import (
    LOOPBACK,
    START_ATTEMPTS,
    RunningServer,
    ServerUnavailable,
    find_binary,
    free_port,
)

#: seconds a new cluster (or a restarted member) gets to elect a leader and serve reads
CLUSTER_START_TIMEOUT = 30.0
HEARTBEAT_MS = 50
#: etcd wants at least five heartbeats per election timeout
ELECTION_MS = 500
#: seconds one status or read probe of one member may take
PROBE_TIMEOUT = 1.0
PROBE_KEY = b"dal-readiness-probe"
#: seconds between two rounds of probes
PROBE_INTERVAL = 0.05
#: names of a member's data directory and log file inside its own directory
DATA_NAME = "data"
LOG_NAME = "etcd.log"


@dataclass(eq=False)
class Member:
    """One etcd member of an :class:`EtcdCluster`: where it listens and its current process.

    Members compare by identity (a restarted member is the same member), so they can key dicts.
    """

    name: str
    client_port: int
    peer_port: int
    member_dir: Path
    #: the process now running this member; :meth:`EtcdCluster.restart` replaces it
    server: RunningServer = field(repr=False)
    host: str = LOOPBACK

    @property
    def data_dir(self) -> Path:
        """Return the member's etcd data directory (kept across restarts)."""
        return self.member_dir / DATA_NAME

    @property
    def log_path(self) -> Path:
        """Return the file the member's output goes to (appended to across restarts)."""
        return self.member_dir / LOG_NAME

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """Return the member's current process."""
        return self.server.process

    @property
    def url(self) -> str:
        """Return the dal URL of this member alone."""
        return f"etcd://{self.host}:{self.client_port}"

    @property
    def endpoint(self) -> tuple[str, int]:
        """Return the member's client (host, port)."""
        return self.host, self.client_port

    @property
    def peer_url(self) -> str:
        """Return the URL the other members reach this one on."""
        return f"http://{self.host}:{self.peer_port}"

    @property
    def running(self) -> bool:
        """Tell whether the member's process is alive (paused counts as alive)."""
        return self.process.poll() is None

    @property
    def paused(self) -> bool:
        """Tell whether the member is frozen by :meth:`EtcdCluster.pause`."""
        return self.server.paused

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines the member wrote, for error messages."""
        return self.server.log_tail(lines)


class EtcdCluster:
    """A running etcd cluster started by :func:`start_etcd_cluster`."""

    def __init__(self, binary: str, workdir: Path, token: str, members: list[Member]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.token = token
        self.members = members
        # every process ever started, so stop() also reaps the ones a restart replaced
        self._started: list[RunningServer] = [member.server for member in members]

    def __repr__(self) -> str:
        return f"EtcdCluster({self.url!r})"

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return the dal URL naming every member: ``etcd://127.0.0.1:p1,127.0.0.1:p2,...``."""
        return "etcd://" + ",".join(f"{host}:{port}" for host, port in self.endpoints)

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """Return every member's client (host, port), in member order."""
        return [member.endpoint for member in self.members]

    @property
    def pids(self) -> list[int]:
        """Return the PID of every process this cluster started, dead or alive."""
        return [server.process.pid for server in self._started]

    def member(self, name: str) -> Member:
        """Return the member called ``name``."""
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def live_members(self) -> list[Member]:
        """Return the members whose process runs and is not paused."""
        return [member for member in self.members if member.running and not member.paused]

    def leader(self, timeout: float = 5.0) -> Member:
        """Return the live member that says it leads (the highest term wins), waiting up to ``timeout`` s.

        A frozen or dead leader cannot answer, so this waits for the election that replaces it.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self._find_leader()
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise ServerUnavailable(f"no etcd leader within {timeout:.1f} s\n{self._log_tails()}")
            time.sleep(PROBE_INTERVAL)

    def wait_healthy(self, timeout: float = CLUSTER_START_TIMEOUT) -> Member:
        """Wait until a leader exists and every live member serves a linearizable read; return the leader."""
        return self._wait_serving([], timeout, what="healthy")

    def kill(self, member: Member) -> None:
        """Kill the member at once (SIGKILL, even when paused) and wait for its exit."""
        if member.running:
            member.process.kill()
            member.process.wait(timeout=5)

    def restart(self, member: Member, timeout: float = CLUSTER_START_TIMEOUT) -> None:
        """Start a stopped member again on its ports and data; return once it serves a linearizable read."""
        if member.running:
            raise ValueError(f"{member.name} is still running; kill it first")
        member.server = _spawn(self.binary, member.name, member.client_port, member.peer_port,
                               member.member_dir, self._initial_cluster(), self.token, "existing")
        self._started.append(member.server)
        try:
            self._wait_serving([member], timeout, what=f"serving {member.name} again")
        except BaseException:
            # leave the member down, as it was, rather than half started
            member.server.stop()
            raise

    def pause(self, member: Member) -> None:
        """Freeze the member (SIGSTOP): its connections stay open but it answers nothing."""
        member.server.pause()

    def resume(self, member: Member) -> None:
        """Let a paused member run again (SIGCONT)."""
        member.server.resume()

    def stop(self) -> None:
        """Stop every process this cluster started (terminate, then kill); calling it again does nothing."""
        for server in self._started:
            server.stop()

    def _initial_cluster(self) -> str:
        return ",".join(f"{member.name}={member.peer_url}" for member in self.members)

    def _find_leader(self) -> Member | None:
        claims: list[tuple[int, Member]] = []
        for member in self.live_members():
            status = _status(member)
            # only the leader itself is trusted: followers keep naming a dead leader until they time out
            if status is not None and status.leader != 0 and status.leader == status.header.member_id:
                claims.append((int(status.raftTerm), member))
        if not claims:
            return None
        # a resumed ex-leader may still claim its old term until it hears from the new leader
        return max(claims, key=lambda claim: claim[0])[1]

    def _wait_serving(self, required: list[Member], timeout: float, *, what: str) -> Member:
        """Wait for a leader and a linearizable read on every live member.

        Fails at once when a member of ``required`` exits.
        """
        deadline = time.monotonic() + timeout
        waiting = "no leader"
        while True:
            dead = [member.name for member in required if not member.running]
            if dead:
                # an exited member does not come back by itself: fail now, not at the deadline
                raise ServerUnavailable(f"etcd member(s) {', '.join(dead)} exited\n{self._log_tails()}")
            leader = self._find_leader()
            if leader is not None:
                slow = [member.name for member in self.live_members() if not _serves(member)]
                if not slow:
                    return leader
                waiting = "no linearizable read from " + ", ".join(slow)
            if time.monotonic() >= deadline:
                raise ServerUnavailable(
                    f"etcd cluster not {what} within {timeout:.0f} s ({waiting})\n{self._log_tails()}")
            time.sleep(PROBE_INTERVAL)

    def _log_tails(self) -> str:
        return "\n".join(
            f"--- {member.name} ({'running' if member.running else f'exited {member.process.returncode}'})"
            f" log tail:\n{member.log_tail()}"
            for member in self.members)


def start_etcd_cluster(workdir: Path, members: int = 3) -> EtcdCluster:
    """Start ``members`` etcd members under ``workdir``; return once every one serves linearizable reads.

    Raises :class:`ServerUnavailable` (with every member's log tail) when the binary is
    missing or the cluster does not come up within :data:`CLUSTER_START_TIMEOUT`; nothing
    started is left running then.
    """
    if members < 1:
        raise ValueError(f"an etcd cluster needs at least one member, not {members}")
    binary = find_binary("etcd", "DAL_ETCD_BIN", "etcd-server")
    workdir.mkdir(parents=True, exist_ok=True)
    failure = ""
    for _attempt in range(START_ATTEMPTS):
        cluster = _launch(binary, workdir, members)
        try:
            cluster._wait_serving(cluster.members, CLUSTER_START_TIMEOUT, what="up")
            return cluster
        except ServerUnavailable as exc:
            failure = str(exc)
            exited = any(not member.running for member in cluster.members)
            cluster.stop()
        except BaseException:
            cluster.stop()
            raise
        # an early exit is most likely a port taken since we picked it: try fresh ports and data
        if not exited:
            break
        for member in cluster.members:
            shutil.rmtree(member.data_dir, ignore_errors=True)
    raise ServerUnavailable(failure)


def _launch(binary: str, workdir: Path, count: int) -> EtcdCluster:
    ports = _distinct_free_ports(2 * count)
    token = f"dal-test-{secrets.token_hex(8)}"
    names = [f"member{index + 1}" for index in range(count)]
    peers = ",".join(f"{name}=http://{LOOPBACK}:{ports[2 * index + 1]}" for index, name in enumerate(names))
    members: list[Member] = []
    try:
        for index, name in enumerate(names):
            client_port, peer_port, member_dir = ports[2 * index], ports[2 * index + 1], workdir / name
            server = _spawn(binary, name, client_port, peer_port, member_dir, peers, token, "new")
            members.append(Member(name, client_port, peer_port, member_dir, server))
    except BaseException:
        for member in members:
            member.server.stop()
        raise
    return EtcdCluster(binary, workdir, token, members)


def _spawn(binary: str, name: str, client_port: int, peer_port: int, member_dir: Path,
           initial_cluster: str, token: str, state: str) -> RunningServer:
    member_dir.mkdir(parents=True, exist_ok=True)
    client_url = f"http://{LOOPBACK}:{client_port}"
    peer_url = f"http://{LOOPBACK}:{peer_port}"
    log_path = member_dir / LOG_NAME
    command = [
        binary,
        "--name", name,
        "--data-dir", str(member_dir / DATA_NAME),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", initial_cluster,
        "--initial-cluster-state", state,
        # a token per cluster: members of two test clusters never mistake each other for peers
        "--initial-cluster-token", token,
        "--heartbeat-interval", str(HEARTBEAT_MS),
        "--election-timeout", str(ELECTION_MS),
        "--quota-backend-bytes", str(256 * 1024 * 1024),
        "--snapshot-count", "5000",
        "--log-level", "warn",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=member_dir, start_new_session=True)
    return RunningServer(f"etcd://{LOOPBACK}:{client_port}", LOOPBACK, client_port, process,
                         member_dir, log_path)


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    # free_port may hand out a port twice (it is released at once); a few extra draws suffice
    for _ in range(count * 10):
        port = free_port()
        if port not in ports:
            ports.append(port)
            if len(ports) == count:
                return ports
    raise ServerUnavailable(f"could not find {count} distinct free loopback ports")


def _status(member: Member) -> Any:
    """Return the member's Maintenance Status, or None when it does not answer in time."""
    with grpc.insecure_channel(f"{member.host}:{member.client_port}") as channel:
        try:
            return etcdrpc.MaintenanceStub(channel).Status(etcdrpc.StatusRequest(), timeout=PROBE_TIMEOUT)
        except grpc.RpcError:
            return None


def _serves(member: Member) -> bool:
    """Tell whether the member answers a linearizable read (which needs a leader and a quorum)."""
    with grpc.insecure_channel(f"{member.host}:{member.client_port}") as channel:
        try:
            etcdrpc.KVStub(channel).Range(etcdrpc.RangeRequest(key=PROBE_KEY), timeout=PROBE_TIMEOUT)
        except grpc.RpcError:
            return False
    return True
