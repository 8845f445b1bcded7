"""Mirrored hybrids for the mirror tests, importable by spawned worker processes.

They refresh from the loopback remote of :mod:`dal.testing.remote` whose URL is in
``DAL_TEST_REMOTE_URL`` (set by the test before it spawns anything), at
``/instances/<hostname>`` one at a time and ``POST /bulk`` for many.
"""

from __future__ import annotations

import os
from typing import Any

from dal import DataObject, Mirror, Property, Relation
from dal.testing.remote import get_json, post_json

REMOTE_ENV = "DAL_TEST_REMOTE_URL"
TIMEOUT = 600


def instance_path(hostname: str) -> str:
    return f"/instances/{hostname}"


def _remote() -> str:
    return os.environ[REMOTE_ENV]


class MirrorCluster(DataObject):
    """A plain (not mirrored) hybrid the mirrored ones belong to."""

    __properties = [Property("name", str, unique=True)]


class MirroredVM(DataObject):
    """A virtual machine mirrored from the remote, with a bulk loader and parsed properties."""

    __properties: list[Property[Any]] = [
        Property("hostname", str, unique=True),
        Property("status", str, mandatory=False, indexed=True),
        Property("ram", int, mandatory=False),
        Property("mtime", float, mandatory=False),
        Property("note", str, mandatory=False)]   # never parsed: refreshes leave it alone
    __relations = [Relation("cluster", MirrorCluster, "vms", mandatory=False)]
    __mirror = Mirror(timeout=TIMEOUT, refresh_every=300)

    def _refresh(self) -> Any:
        return get_json(_remote() + instance_path(self.hostname))

    @classmethod
    def _refresh_many(cls, objects: list[MirroredVM]) -> dict[str, Any]:
        answers = post_json(_remote() + "/bulk", {"paths": [instance_path(obj.hostname) for obj in objects]})
        return {obj.guid: answers[instance_path(obj.hostname)] for obj in objects
                if instance_path(obj.hostname) in answers}

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return {"status": info["status"], "ram": info["beparams"]["memory"], "mtime": info["mtime"]}


class SingleVM(DataObject):
    """A mirrored hybrid without ``_refresh_many`` nor a parser: each object refreshes on its own."""

    __properties = [Property("hostname", str, unique=True)]
    __mirror = Mirror(timeout=TIMEOUT)

    def _refresh(self) -> Any:
        return get_json(_remote() + instance_path(self.hostname))


class BadParseVM(DataObject):
    """A mirrored hybrid whose parser returns what it may not: its refreshes fail, and say why."""

    __properties = [Property("hostname", str, unique=True), Property("ram", int, mandatory=False)]
    __mirror = Mirror(timeout=TIMEOUT)

    def _refresh(self) -> Any:
        return get_json(_remote() + instance_path(self.hostname))

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return dict(info["parsed"])


class VMGrant(DataObject):
    """A permission on a mirrored object: a relation no refresh may touch."""

    __properties = [Property("user", str)]
    __relations = [Relation("vm", MirroredVM, "grants")]


class Clock:
    """A stand-in for the mirror's clock (``dal.mirror.clock.now``), moved by the test."""

    def __init__(self) -> None:
        self.time = 1_000_000.0

    def now(self) -> float:
        return self.time


def answer(hostname: str, status: str = "running", memory: int = 512, mtime: float = 1.0) -> dict[str, Any]:
    """Return the remote's answer about one instance, shaped like Ganeti's RAPI."""
    return {"name": hostname, "status": status, "beparams": {"memory": memory}, "mtime": mtime}
