"""Mirrored hybrids of the ``dal refresh`` tests (tests/test_refresher.py), imported by its processes too.

They ask the loopback remote at ``$DAL_TEST_REMOTE`` (:mod:`dal.testing.remote`); with
``$DAL_TEST_REFRESH_LOG`` set, every remote call appends ``<pid> start <time>`` and ``<pid> end
<time>`` lines to that file, so a test can check that two refreshers never called at once.
``$DAL_TEST_MIRROR_TIMEOUT`` and ``$DAL_TEST_REFRESH_EVERY`` set the mirror's schedule (read at
import, as a class is declared once).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dal import DataObject, Mirror, Property
from dal.testing.remote import get_json, post_json

T = TypeVar("T")

TIMEOUT = float(os.environ.get("DAL_TEST_MIRROR_TIMEOUT", "2"))
EVERY = float(os.environ.get("DAL_TEST_REFRESH_EVERY", "0.5"))


def _remote() -> str:
    return os.environ["DAL_TEST_REMOTE"]


def _logged(call: Callable[[], T]) -> T:
    log = os.environ.get("DAL_TEST_REFRESH_LOG")
    if log is None:
        return call()
    _append(log, "start")
    try:
        return call()
    finally:
        _append(log, "end")


def _append(log: str, what: str) -> None:
    # one write() on an O_APPEND file: lines of several processes never interleave
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {what} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


class RefresherVm(DataObject):
    """Refreshed in bulk: one POST per batch."""

    __properties: list[Property[Any]] = [Property("hostname", str, unique=True),
                                         Property("status", str, mandatory=False, indexed=True)]
    __mirror = Mirror(TIMEOUT, refresh_every=EVERY)

    def _refresh(self) -> Any:
        return _logged(lambda: get_json(f"{_remote()}/vm/{self.hostname}"))

    @classmethod
    def _refresh_many(cls, objects: Sequence[DataObject]) -> dict[str, Any]:
        paths = {obj.guid: f"/vm/{obj.hostname}" for obj in objects}  # type: ignore[attr-defined]
        answers = _logged(lambda: post_json(f"{_remote()}/vms", {"paths": list(paths.values())}))
        return {guid: answers[path] for guid, path in paths.items() if path in answers}

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return {"status": info["status"]}


class RefresherDisk(DataObject):
    """Refreshed one object at a time (no ``_refresh_many``)."""

    __properties: list[Property[Any]] = [Property("name", str, unique=True),
                                         Property("size", int, mandatory=False)]
    __mirror = Mirror(TIMEOUT, refresh_every=EVERY)

    def _refresh(self) -> Any:
        return _logged(lambda: get_json(f"{_remote()}/disk/{self.name}"))

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return {"size": info["size"]}
