"""A loopback JSON HTTP "remote" for tests (and demos) of mirrored hybrids: it counts every call.

A stdlib :mod:`http.server` in a daemon thread, on a free port of ``127.0.0.1``:

- ``GET <path>`` answers ``answers[path]`` as JSON (404 when it has none);
- ``POST <path>`` with a JSON body ``{"paths": [...]}`` answers one JSON object,
  ``{path: answer}`` for each listed path it has an answer for (a bulk call);
- a path in ``failures`` answers that HTTP status instead, and ``delay`` seconds pass before
  any answer (a slow remote).

Every request is counted by its path (without the query string) in :meth:`Remote.count`, so a
test asserts how often the remote was called, wherever the caller ran (other processes too).
:func:`get_json` and :func:`post_json` are the matching client calls, raising :class:`RemoteError`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

#: seconds a client call waits for an answer
TIMEOUT = 10.0


class RemoteError(Exception):
    """A call to the remote failed: not reachable, or an answer other than 200 with JSON."""


class Remote:
    """The remote: set ``answers`` and ``failures`` (by path) and ``delay``; read :meth:`count`."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        #: path -> HTTP status answered instead (503: the remote is down)
        self.failures: dict[str, int] = {}
        self.delay = 0.0
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- running --------------------------------------------------------------------------

    def start(self) -> Remote:
        """Start serving on a free loopback port; return self."""
        remote = self

        class Handler(_Handler):
            owner = remote

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="dal-test-remote", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Remote:
        return self.start() if self._server is None else self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RemoteError("the remote is not running: call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- counting -------------------------------------------------------------------------

    def count(self, path: str | None = None) -> int:
        """Return the calls to ``path`` so far (all paths when ``None``)."""
        with self._lock:
            return sum(self._calls.values()) if path is None else self._calls[path]

    def calls(self) -> dict[str, int]:
        """Return the calls so far by path."""
        with self._lock:
            return dict(self._calls)

    def reset(self) -> None:
        """Forget the calls counted so far."""
        with self._lock:
            self._calls.clear()

    def _called(self, path: str) -> None:
        with self._lock:
            self._calls[path] += 1


class _Handler(BaseHTTPRequestHandler):
    owner: Remote

    def do_GET(self) -> None:  # the name http.server calls
        path = urlsplit(self.path).path
        remote = self._begin(path)
        if remote is None:
            return
        if path not in remote.answers:
            self._send(404, {"error": f"no answer for {path}"})
            return
        self._send(200, remote.answers[path])

    def do_POST(self) -> None:  # the name http.server calls
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b"{}"
        remote = self._begin(path)
        if remote is None:
            return
        try:
            wanted = json.loads(body).get("paths", [])
        except (ValueError, AttributeError):
            self._send(400, {"error": "the body must be a JSON object {\"paths\": [...]}"})
            return
        self._send(200, {item: remote.answers[item] for item in wanted if item in remote.answers})

    def _begin(self, path: str) -> Remote | None:
        """Count the call and wait the delay; answer a failure and return None when one is set."""
        remote = self.owner
        remote._called(path)
        if remote.delay:
            time.sleep(remote.delay)
        status = remote.failures.get(path)
        if status is not None:
            self._send(status, {"error": f"failing on purpose with {status}"})
            return None
        return remote

    def _send(self, status: int, value: Any) -> None:
        payload = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a test's output is not the place for an access log


def get_json(url: str, *, timeout: float = TIMEOUT) -> Any:
    """GET ``url`` and return its JSON answer; RemoteError for anything but 200 with JSON."""
    return _call(urllib.request.Request(url), timeout)


def post_json(url: str, body: Any, *, timeout: float = TIMEOUT) -> Any:
    """POST ``body`` as JSON to ``url`` and return its JSON answer; RemoteError otherwise."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    return _call(request, timeout)


def _call(request: urllib.request.Request, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise RemoteError(f"{request.full_url} answered {exc.code} {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise RemoteError(f"{request.full_url} failed: {exc}") from exc
