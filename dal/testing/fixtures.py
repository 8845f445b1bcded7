"""What test suites share when they start servers: start one, or skip (or fail) without it.

``DAL_REQUIRE_SERVICES=1`` (CI sets it) turns a server that cannot start into a failure: a
missing server must never pass as a skip there.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from dal.testing.servers import RunningServer, ServerUnavailable, start_memcached

T = TypeVar("T")


def services_required() -> bool:
    """Tell whether a server that cannot start must fail the test rather than skip it."""
    return os.environ.get("DAL_REQUIRE_SERVICES") == "1"


def start_or_skip(what: str, start: Callable[[], T]) -> T:
    """Return ``start()``; without the server, skip the test (fail it when services are required)."""
    try:
        return start()
    except ServerUnavailable as exc:
        if services_required():
            pytest.fail(f"{what} is required (DAL_REQUIRE_SERVICES=1) but could not start: {exc}")
        pytest.skip(f"{what} not available: {exc}")


@contextlib.contextmanager
def memcached_servers(workdir: Path, count: int = 3) -> Iterator[list[RunningServer]]:
    """Start ``count`` memcached servers of a test's own (free to kill and pause) under ``workdir``;
    resume and stop them after, and those already started when a later one cannot start."""
    started: list[RunningServer] = []
    try:
        for n in range(count):
            started.append(start_or_skip("memcached", functools.partial(start_memcached, workdir / f"m{n}")))
        yield started
    finally:
        for server in started:
            server.stop()
