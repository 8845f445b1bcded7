"""``RemoteAPI``: the HTTP client of a cluster's JSON API, which ``VirtualMachine`` mirrors.

Not a hybrid: the client a :class:`~dal.hybrids.cluster.Cluster`'s connection settings make
(``Cluster.client()`` keeps one per settings in a :class:`dal.clients.ClientCache`). It
speaks the API ``dal demo`` serves (:mod:`dal.cli.demo_remote`), shaped like Ganeti's RAPI:
``GET /instances/<hostname>`` for one instance, ``GET /instances?bulk=1`` for all of them.
It keeps one connection open (the remote is slow; a new connection per call would add to
it) and serializes the calls on it, so threads may share one client.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from typing import Any
from urllib.parse import quote

#: seconds a call may take before it fails (a mirror then serves the stored data)
TIMEOUT = 10.0


class RemoteAPIError(Exception):
    """A call to the remote API failed: not reachable, or an answer other than 200 with JSON."""


class RemoteAPI:
    """A client of one remote: ``RemoteAPI(host=..., port=..., username=..., password=...)``."""

    def __init__(self, host: str, port: int, username: str | None = None, password: str | None = None,
                 *, timeout: float = TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self.closed = False

    def __repr__(self) -> str:  # never shows the credentials
        return f"RemoteAPI(http://{self.host}:{self.port})"

    def get_instance(self, hostname: str) -> dict[str, Any]:
        """Return the remote's answer about one instance."""
        found = self._get(f"/instances/{quote(hostname, safe='')}")
        if not isinstance(found, dict):
            raise RemoteAPIError(f"{self}: instance {hostname!r} is not a JSON object")
        return found

    def get_instances(self) -> list[dict[str, Any]]:
        """Return every instance the remote knows, in one call."""
        found = self._get("/instances?bulk=1")
        if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
            raise RemoteAPIError(f"{self}: the instance list is not a JSON list of objects")
        return found

    def close(self) -> None:
        """Close the connection; the client is not used again (its cache dropped it)."""
        with self._lock:
            self.closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _get(self, path: str) -> Any:
        with self._lock:
            if self.closed:
                raise RemoteAPIError(f"{self} is closed")
            try:
                status, body = self._request(path)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise RemoteAPIError(f"GET {path} on {self}: {type(exc).__name__}: {exc}") from exc
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise RemoteAPIError(f"GET {path} on {self}: HTTP {status}, not JSON") from exc
        if status != 200:
            reason = answer.get("error") if isinstance(answer, dict) else None
            raise RemoteAPIError(f"GET {path} on {self}: HTTP {status}{f': {reason}' if reason else ''}")
        return answer

    def _request(self, path: str) -> tuple[int, bytes]:
        """Send one GET on the kept connection; a connection the server closed meanwhile is redone once."""
        for attempt in (1, 2):
            fresh = self._connection is None
            if fresh:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            connection = self._connection
            assert connection is not None
            try:
                connection.request("GET", path, headers=self._headers)
                response = connection.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop()
                if fresh or attempt == 2:
                    raise
                continue  # an idle kept connection the server had closed: the request never ran
            if response.will_close:
                self._drop()
            return response.status, body
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
