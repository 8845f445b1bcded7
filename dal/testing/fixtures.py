"""What test suites share when they start servers: start one, or skip (or fail) without it.

``DAL_REQUIRE_SERVICES=1`` (CI sets it) turns a server that cannot start into a failure: a
missing server must never pass as a skip there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest

from dal.testing.servers import ServerUnavailable

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
