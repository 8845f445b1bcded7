"""Hybrids of tests/test_abandon.py and tests/test_abandon_races.py, importable by the process that
writes concurrently in the latter."""

from __future__ import annotations

from typing import Any

from dal import DataObject, Property, Relation


class AbSite(DataObject):
    """The target of two relations of one hybrid."""

    __properties: list[Property[Any]] = [Property("name", str)]


class AbLink(DataObject):
    """Points at a site twice: one referrer document holds both relations to it, and a concurrent
    writer may move one relation and leave the other."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("primary", AbSite, "primaries", mandatory=False),
                   Relation("secondary", AbSite, "secondaries", mandatory=False)]
