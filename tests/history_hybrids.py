"""Hybrids of the randomized history test (tests/test_random_histories.py), importable by its spawned
workers; prefixed ``Rh`` so their names clash with no other test's."""

from __future__ import annotations

from typing import Any

from dal import DataObject, Property, Relation


class RhGroup(DataObject):
    """What items belong to (a one-to-many relation) and point at one-to-one."""

    __properties: list[Property[Any]] = [Property("label", str, mandatory=False)]


class RhItem(DataObject):
    """An item with a unique, an indexed, a list and a counter field, and two relations."""

    __properties: list[Property[Any]] = [
        Property("code", str, unique=True, mandatory=False),
        Property("color", ["red", "green", "blue"], indexed=True, default="red"),
        Property("tags", list, default=[], mandatory=False),
        Property("a", int, default=0),
        Property("b", int, default=0)]
    __relations = [Relation("group", RhGroup, "items", mandatory=False),
                   Relation("peer", RhGroup, "item_one", onetoone=True, mandatory=False)]
