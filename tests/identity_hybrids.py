"""A hybrid with indexed and plain container fields, for the value-identity tests."""

from __future__ import annotations

from typing import Any, Optional

from dal import DataObject, Property, Relation


class Bag(DataObject, hybrid_name="vbag"):
    """Lists and dicts of mixed values, indexed and not."""

    __properties: list[Property[Any]] = [
        Property("label", str),
        Property("tags", list, default=[], mandatory=False, indexed=True),
        Property("meta", dict, default={}, mandatory=False, indexed=True),
        Property("loose", list, default=[], mandatory=False),
        Property("ratio", float, default=0.0, mandatory=False),
    ]


class Typed(DataObject, hybrid_name="vtyped"):
    """Containers declared with element types, checked by pydantic."""

    __properties: list[Property[Any]] = [
        Property("names", list[str], default=[], mandatory=False),
        Property("counts", Optional[list[int]], mandatory=False),  # noqa: UP045 - the form users write
        Property("label", str, mandatory=False),
    ]


class Shelf(DataObject, hybrid_name="vshelf"):
    """Odd names, a mixed-type enum and a relation: what sorting must handle without raising."""

    __properties: list[Property[Any]] = [
        Property("name", str),
        Property("grade", [1, "a", True, 2.5], mandatory=False),
        Property("extra", dict, default={}, mandatory=False),
    ]
    __relations = [Relation("bag", Bag, "shelves", mandatory=False)]
