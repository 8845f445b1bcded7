"""An etcd of a test's own started with flags the shared one lacks (a lower --max-txn-ops, TLS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dal.testing import servers
from dal.testing.fixtures import start_or_skip
from dal.testing.servers import LOOPBACK, RunningServer, free_port


def start_etcd_with(workdir: Path, *flags: str, scheme: str = "http",
                    ready: Callable[[str, int], bool] | None = None) -> RunningServer:
    """Start a single-member etcd with extra ``flags``, serving clients over ``scheme`` (``https``
    needs --cert-file and --key-file among them, and a ``ready`` that can connect); stop it by PID."""

    def command(client_port: int) -> list[str]:
        binary = servers.find_binary("etcd", "DAL_ETCD_BIN", "etcd-server")
        peer, client = f"http://{LOOPBACK}:{free_port()}", f"{scheme}://{LOOPBACK}:{client_port}"
        return [binary, "--name", "own", "--data-dir", str(workdir / "etcd-data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"own={peer}", "--initial-cluster-state", "new", "--log-level", "warn",
                *flags]

    return start_or_skip("etcd", lambda: servers._start("etcd", workdir, command,
                                                         ready or servers._etcd_ready, None))
