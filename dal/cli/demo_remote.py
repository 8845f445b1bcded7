"""The remote API ``dal demo`` mirrors: a small JSON HTTP server it runs itself, on loopback.

It plays a cluster manager (Ganeti's RAPI, in the seed system): it knows instances (virtual
machines) with a hostname, a status, a memory size and an ``mtime``, and answers

- ``GET /instances/<hostname>``: one instance, a JSON object (404 when it does not know it);
- ``GET /instances?bulk=1``: every instance, a JSON list, in one answer.

It runs in a daemon thread of the demo's own process (stdlib :mod:`http.server`, a free
port), so the demo needs no installed server, and it counts the requests it answered by
endpoint: the demo prints those counts, so what it claims about remote calls is measured on
the remote's side. :attr:`DemoRemote.failing` makes every request fail (503), as a remote
that is down; with ``username`` set, requests must carry HTTP basic credentials.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK = "127.0.0.1"
#: the endpoints, as counted in :attr:`DemoRemote.calls`
INSTANCE, BULK = "instance", "bulk"


class DemoRemote:
    """A JSON HTTP API of instances on a free loopback port; ``with`` it to run and stop it."""

    def __init__(self, *, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self.password = password
        self.failing = False
        #: requests answered (with success or not) by endpoint: INSTANCE and BULK
        self.calls: Counter[str] = Counter()
        self._instances: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._clock = 1_700_000_000  # an mtime that moves by one per change: deterministic output

    # --- the instances ----------------------------------------------------------------------

    def add(self, hostname: str, *, status: str = "running", memory: int = 512) -> None:
        """Add an instance the remote knows."""
        with self._lock:
            self._clock += 1
            self._instances[hostname] = {"name": hostname, "status": status,
                                         "beparams": {"memory": memory}, "mtime": self._clock}

    def change(self, hostname: str, *, touch_mtime: bool = True, **fields: Any) -> None:
        """Change an instance's ``status`` or ``memory``; with ``touch_mtime=False`` its mtime stays.

        A remote may change a field without moving ``mtime`` (GWM missed such changes): the
        mirror compares the whole answer, so it sees them anyway.
        """
        with self._lock:
            instance = self._instances[hostname]
            if "status" in fields:
                instance["status"] = fields.pop("status")
            if "memory" in fields:
                instance["beparams"] = {**instance["beparams"], "memory": fields.pop("memory")}
            if fields:
                raise TypeError(f"unknown instance fields {sorted(fields)}")
            if touch_mtime:
                self._clock += 1
                instance["mtime"] = self._clock

    def instance(self, hostname: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._instances.get(hostname)
            return None if found is None else json.loads(json.dumps(found))  # a copy, nested too

    def instances(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(found)) for _, found in sorted(self._instances.items())]

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def count(self, endpoint: str) -> None:
        with self._lock:
            self.calls[endpoint] += 1

    # --- the server ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the demo remote is not running")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return LOOPBACK

    def settings(self) -> dict[str, Any]:
        """Return what a client needs to reach this remote (a Cluster's connection settings)."""
        return {"host": self.host, "port": self.port, "username": self.username, "password": self.password}

    def start(self) -> DemoRemote:
        """Listen on a free loopback port and serve from a daemon thread; return self."""
        handler = type("Handler", (_Handler,), {"remote": self})
        self._server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="dal-demo-remote",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port; calling it again does nothing."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DemoRemote:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def authorized(self, header: str | None) -> bool:
        if self.username is None:
            return True
        expected = f"{self.username}:{self.password or ''}".encode()
        given = b""
        if header and header.startswith("Basic "):
            try:
                given = base64.b64decode(header[len("Basic "):], validate=True)
            except ValueError:
                given = b""
        return hmac.compare_digest(given, expected)


class _Handler(BaseHTTPRequestHandler):
    """Answer GETs of the API as JSON; the class of each server names its ``remote``."""

    remote: DemoRemote
    protocol_version = "HTTP/1.1"  # keep-alive: a client may reuse its connection
    # headers and body leave in two writes: without this, Nagle's algorithm holds the body back
    # until the client's delayed ACK (40 ms a call)
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # the name http.server calls
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        if parts[:1] != ["instances"] or len(parts) > 2:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {url.path}"})
            return
        endpoint = INSTANCE if len(parts) == 2 else BULK
        self.remote.count(endpoint)
        if not self.remote.authorized(self.headers.get("Authorization")):
            self._answer(HTTPStatus.UNAUTHORIZED, {"error": "wrong credentials"})
        elif self.remote.failing:
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the remote is down (the demo's switch)"})
        elif endpoint == BULK:
            if parse_qs(url.query).get("bulk") != ["1"]:
                self._answer(HTTPStatus.BAD_REQUEST, {"error": "list instances with ?bulk=1"})
            else:
                self._answer(HTTPStatus.OK, self.remote.instances())
        else:
            found = self.remote.instance(parts[1])
            if found is None:
                self._answer(HTTPStatus.NOT_FOUND, {"error": f"no instance {parts[1]!r}"})
            else:
                self._answer(HTTPStatus.OK, found)

    def _answer(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing: the demo prints its own report."""
