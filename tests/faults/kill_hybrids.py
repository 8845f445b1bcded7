"""Hybrids of the writer-kill scenarios, importable by their spawned worker processes.

``Crate.depot`` is an optional relation, so a ``Depot`` with crates can be deleted with
``abandon=['crates']`` (which clears the crates' links in the delete's transaction) and is
refused with ``LinkedObjectError`` without it. ``KillLedger`` is never deleted: every writer
increments it and counts the increments that returned, so lost or doubled writes show.
"""

from __future__ import annotations

from typing import Any

from dal import DataObject, Property, Relation


class Depot(DataObject):
    """A small set of these is created, incremented and deleted by killed writers."""

    __properties: list[Property[Any]] = [Property("label", str, unique=True),
                                         Property("count", int, default=0, indexed=True)]


class Crate(DataObject):
    """Points at a depot (optionally): created, moved between depots and deleted by writers."""

    __properties: list[Property[Any]] = [Property("name", str, indexed=True),
                                         Property("moves", int, default=0)]
    __relations = [Relation("depot", Depot, "crates", mandatory=False)]


class KillLedger(DataObject):
    """One counter every writer increments; never deleted."""

    __properties: list[Property[Any]] = [Property("label", str, unique=True),
                                         Property("count", int, default=0)]
