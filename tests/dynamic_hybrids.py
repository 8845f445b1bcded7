"""Hybrids for the dynamics tests, importable by spawned worker processes."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from typing import Any

from dal import DataObject, Dynamic, Property

#: loader calls in this process, by (dynamic, guid)
CALLS: Counter[tuple[str, str]] = Counter()
#: set by a test to make a loader block until it is released
GATES: dict[str, threading.Event] = {}
HOOKS: dict[str, Any] = {}


class Gauge(DataObject):
    """A measured thing whose readings are expensive to compute."""

    __properties: list[Property[Any]] = [Property("name", str), Property("level", int, default=0)]
    __dynamics = [Dynamic("reading", str, 60, locked=True, lock_timeout=5),
                  Dynamic("slow_lock", str, 60, locked=True, lock_timeout=0.5),
                  Dynamic("plain", int, 60),
                  Dynamic("nothing", str, 60),
                  Dynamic("failing", int, 60),
                  Dynamic("wrong", int, 60),
                  Dynamic("uncached", int, 0)]

    def _reading(self) -> str:
        """Take a while, then return a value unique to this computation."""
        CALLS["reading", self.guid] += 1
        time.sleep(float(os.environ.get("DAL_TEST_READING_SECONDS", "0.3")))
        return uuid.uuid4().hex

    def _slow_lock(self) -> str:
        CALLS["slow_lock", self.guid] += 1
        time.sleep(1.5)
        return uuid.uuid4().hex

    def _plain(self) -> int:
        CALLS["plain", self.guid] += 1
        hook = HOOKS.pop("plain", None)
        if hook is not None:
            hook()  # runs while the computation is under way
        gate = GATES.get("plain")
        if gate is not None:
            gate.wait(5)
        return self.level * 10

    def _nothing(self) -> str | None:
        CALLS["nothing", self.guid] += 1
        return None

    def _failing(self) -> int:
        CALLS["failing", self.guid] += 1
        raise RuntimeError("sensor offline")

    def _wrong(self) -> Any:
        CALLS["wrong", self.guid] += 1
        return "not an int"

    def _uncached(self) -> int:
        CALLS["uncached", self.guid] += 1
        return CALLS["uncached", self.guid]
