"""Start throwaway etcd, memcached and Redis servers on loopback ports, for tests.

Each server runs in its own work directory with its output in a log file there, so a
failed start can say why. Missing binaries raise :class:`ServerUnavailable` naming the
Debian package that installs them; the test suite turns that into a skip (or a failure
when services are required).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyetcd

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0
#: how often a start is retried when another process grabbed one of the picked ports
START_ATTEMPTS = 3


class ServerUnavailable(Exception):
    """A server could not be started: missing binary, or it did not become ready."""


@dataclass
class RunningServer:
    """A server process this module started, and how to reach it."""

    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    _paused: bool = field(default=False, repr=False)

    @property
    def paused(self) -> bool:
        """Tell whether the server is frozen by :meth:`pause` (a dead one is not paused)."""
        return self._paused and self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers); calling it again does nothing."""
        if self.process.poll() is not None:
            return
        if self._paused:
            # a stopped process only handles SIGTERM once continued
            self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would, and wait for it to be gone."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=5)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self._paused = True
        # the signal is asynchronous: a thread may still answer a request unless we wait
        deadline = time.monotonic() + 2
        while not _all_threads_stopped(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        os.kill(self.process.pid, signal.SIGCONT)
        self._paused = False

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines the server wrote, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _all_threads_stopped(pid: int) -> bool:
    """Tell whether every thread of ``pid`` is stopped (Linux /proc; elsewhere, assume so)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        # the state follows the parenthesised command name in /proc/PID/task/TID/stat
        states = [(task / "stat").read_text().rpartition(")")[2].split()[0] for task in tasks.iterdir()]
    except (OSError, IndexError):
        return not tasks.parent.exists()
    return all(state in ("T", "t") for state in states)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


_reserved: socket.socket | None = None
_reserved_lock = threading.Lock()


def closed_port() -> int:
    """Return a loopback port on which connections are refused, for fault tests.

    The port stays bound (never listening) for the life of the process, so no other
    server can take it and turn a "refused" test into a "connected" one.
    """
    global _reserved
    with _reserved_lock:
        if _reserved is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            _reserved = sock
        return int(_reserved.getsockname()[1])


def find_binary(name: str, env_var: str, package: str) -> str:
    """Return the path of a server binary, from ``env_var`` or ``PATH``."""
    override = os.environ.get(env_var)
    if override:
        if not os.access(override, os.X_OK):
            raise ServerUnavailable(f"{env_var}={override} is not an executable file")
        return override
    found = shutil.which(name)
    if found is None:
        raise ServerUnavailable(
            f"{name} is not installed (install the Debian package {package!r}, "
            f"or point {env_var} at the binary)")
    return found


def start_etcd(workdir: Path, *, port: int | None = None) -> RunningServer:
    """Start a single-member etcd with its data in ``workdir``; return once it serves reads.

    ``port`` pins the client port (to restart a server where clients expect it).
    """
    binary = find_binary("etcd", "DAL_ETCD_BIN", "etcd-server")

    def command(client_port: int) -> list[str]:
        peer_port = free_port()
        name = "dal-test"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        client_url = f"http://{LOOPBACK}:{client_port}"
        return [
            binary,
            "--name", name,
            "--data-dir", str(workdir / "etcd-data"),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{name}={peer_url}",
            "--initial-cluster-state", "new",
            # small and quiet: tests write little, and a big snapshot interval only costs memory
            "--quota-backend-bytes", str(256 * 1024 * 1024),
            "--snapshot-count", "5000",
            "--log-level", "warn",
        ]

    return _start("etcd", workdir, command, _etcd_ready, port)


def start_memcached(workdir: Path, *, port: int | None = None) -> RunningServer:
    """Start a memcached on loopback; return once it answers ``version``."""
    binary = find_binary("memcached", "DAL_MEMCACHED_BIN", "memcached")
    # memcached refuses to run as root unless told which user to run as
    user = getpass.getuser()

    def command(client_port: int) -> list[str]:
        return [binary, "-u", user, "-l", LOOPBACK, "-p", str(client_port), "-U", "0", "-m", "64"]

    return _start("memcached", workdir, command, _memcached_ready, port)


def start_redis(workdir: Path, *, port: int | None = None, appendfsync: str | None = None,
                cluster: bool = False) -> RunningServer:
    """Start a redis-server on loopback with its files in ``workdir``; return once it answers ``PING``.

    No persistence by default (no snapshots, no AOF): tests need none, and writing costs time.
    ``appendfsync`` (``always``, ``everysec`` or ``no``) turns the append-only file on with that
    fsync policy, so a server killed and restarted on the same ``workdir`` and ``port`` reloads it.
    ``cluster`` starts it in cluster mode (``cluster-enabled yes``), owning no slot yet.
    """
    binary = find_binary("redis-server", "DAL_REDIS_BIN", "redis-server")
    if appendfsync not in (None, "always", "everysec", "no"):
        raise ValueError(f"appendfsync is always, everysec or no, not {appendfsync!r}")
    durability = ["--appendonly", "no"] if appendfsync is None else [
        "--appendonly", "yes", "--appendfsync", appendfsync, "--appenddirname", "appendonly"]
    if cluster:
        durability += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]

    def command(client_port: int) -> list[str]:
        return [binary, "--port", str(client_port), "--bind", LOOPBACK, "--dir", str(workdir),
                "--save", "", *durability, "--daemonize", "no", "--protected-mode", "no",
                "--loglevel", "warning", "--logfile", ""]

    return _start("redis", workdir, command, _redis_ready, port)


def _start(kind: str, workdir: Path, command: Callable[[int], list[str]],
           ready: Callable[[str, int], bool], port: int | None) -> RunningServer:
    workdir.mkdir(parents=True, exist_ok=True)
    failure = ""
    for attempt in range(START_ATTEMPTS):
        client_port = port if port is not None else free_port()
        log_path = workdir / f"{kind}-{client_port}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command(client_port), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
        server = RunningServer(f"{kind}://{LOOPBACK}:{client_port}", LOOPBACK, client_port,
                               process, workdir, log_path)
        deadline = time.monotonic() + START_TIMEOUT
        answered = False
        while time.monotonic() < deadline and process.poll() is None:
            if ready(LOOPBACK, client_port):
                # another process may hold the port (taken since free_port() picked it): then its
                # server answers, and ours, failing to bind, exits; only our own answer is ready
                if process.poll() is None and _serves(kind, client_port, process.pid):
                    return server
                answered = True
            time.sleep(0.05)
        exited = process.poll() is not None
        server.stop()
        failure = _start_failure(server, exited, answered)
        # an early exit is most likely a port taken since we picked it: try fresh ports
        if not exited or port is not None or attempt == START_ATTEMPTS - 1:
            break
    raise ServerUnavailable(failure)


def _start_failure(server: RunningServer, exited: bool, answered: bool) -> str:
    """Say why ``server`` did not start: it exited, or it never was the one answering, or not ready."""
    kind = server.url.partition(":")[0]
    status = f"exited with status {server.process.returncode}" if exited else "was not ready"
    foreign = (f"; another process's server answers on port {server.port}, not the one started "
               f"(pid {server.process.pid}): free the port, or start on another"
               if answered else "")
    return (f"{kind} {status} within {START_TIMEOUT:.0f} s on port {server.port}{foreign}; log tail:\n"
            f"{server.log_tail()}")


def _serves(kind: str, port: int, pid: int) -> bool:
    """Tell whether the server answering on ``port`` is process ``pid`` (or one it started):
    Redis and memcached name their pid (``INFO server``, ``stats``); for etcd, whether the process
    listens on the port (Linux /proc; elsewhere, that it is alive is all that can be told cheaply)."""
    if kind == "redis":
        answering = _answering_pid(port, b"INFO server\r\n", rb"process_id:([0-9]+)\r\n")
    elif kind == "memcached":
        answering = _answering_pid(port, b"stats\r\n", rb"STAT pid ([0-9]+)\r\n")
    else:
        return _listens(pid, port) is not False
    return answering is not None and answering in _family(pid)


def _answering_pid(port: int, command: bytes, pattern: bytes) -> int | None:
    """Return the pid the server on ``port`` gives in its answer to ``command``, None without one."""
    data = b""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(command)
            while (found := re.search(pattern, data)) is None and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    return int(found[1]) if found else None


def _family(pid: int) -> set[int]:
    """Return ``pid`` and its descendants (Linux /proc; elsewhere ``pid`` alone): a server binary
    given as a wrapper script that does not ``exec`` runs as its child."""
    family, pending = {pid}, [pid]
    while pending:
        for task in Path(f"/proc/{pending.pop()}/task").glob("*/children"):
            try:
                children = {int(child) for child in task.read_text().split()} - family
            except (OSError, ValueError):
                continue
            family |= children
            pending.extend(children)
    return family


def _listens(pid: int, port: int) -> bool | None:
    """Tell whether ``pid`` (or one of its descendants) holds the socket listening on TCP ``port``;
    None where /proc cannot tell (not Linux)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    # fields: slot, local address:port (hex), remote, state (0A: listening), ..., inode (10th)
    sockets = {f"socket:[{fields[9]}]" for fields in map(str.split, lines)
               if len(fields) > 9 and fields[1].endswith(f":{port:04X}") and fields[3] == "0A"}
    for member in _family(pid):
        try:
            descriptors = list(Path(f"/proc/{member}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            with contextlib.suppress(OSError):
                if os.readlink(descriptor) in sockets:
                    return True
    return False


def _etcd_ready(host: str, port: int) -> bool:
    try:
        client = pyetcd.client(host=host, port=port, timeout=1)
    except Exception:
        return False
    try:
        client.get("dal-readiness-probe")
        return True
    except Exception:
        return False
    finally:
        client.close()


def _answers(host: str, port: int, command: bytes, expected: bytes) -> bool:
    """Whether the server at ``host:port`` answers ``command`` with a reply starting ``expected``."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(command)
            return sock.recv(64).startswith(expected)
    except OSError:
        return False


def _memcached_ready(host: str, port: int) -> bool:
    return _answers(host, port, b"version\r\n", b"VERSION")


def _redis_ready(host: str, port: int) -> bool:
    # a server still loading its append-only file answers -LOADING: not ready yet
    return _answers(host, port, b"PING\r\n", b"+PONG")
