"""Hybrids for the query tests: indexed, unique and plain fields, relations two hops deep, a
self relation and a dynamic. Stored as ``q<name>``, apart from other test modules' hybrids."""

from __future__ import annotations

from typing import Any

from dal import DataObject, Dynamic, Property, Relation


class Site(DataObject, hybrid_name="qsite"):
    """Where kinds are made."""

    __properties: list[Property[Any]] = [Property("name", str, unique=True),
                                         Property("region", str, indexed=True, mandatory=False)]


class Kind(DataObject, hybrid_name="qkind"):
    """A kind of item; its ``code`` is indexed, its ``label`` is not."""

    __properties: list[Property[Any]] = [Property("code", str, indexed=True),
                                         Property("label", str, mandatory=False)]
    __relations = [Relation("site", Site, "kinds", mandatory=False)]


class Item(DataObject, hybrid_name="qitem"):
    """What the queries select."""

    __properties: list[Property[Any]] = [
        Property("name", str),
        Property("status", ["NEW", "RUNNING", "STOPPED"], default="NEW", indexed=True),
        Property("size", int, default=0),
        Property("ratio", float, default=0.0),
        Property("tags", list, default=[], mandatory=False),
        Property("flag", bool, default=False),
        Property("serial", str, unique=True, mandatory=False),
        Property("note", str, mandatory=False),
        Property("note2", str, mandatory=False),
    ]
    __relations = [Relation("kind", Kind, "items", mandatory=False),
                   Relation("parent", None, "children", mandatory=False)]
    __dynamics = [Dynamic("double", int, 60)]

    def _double(self) -> int:
        return int(self.size) * 2
