"""Small hybrids the object-level tests share, declared once (hybrid names are process-wide).

``LOADER_CALLS`` counts how often each dynamic loader ran, keyed by ``(dynamic, guid)``,
so tests can tell a cached dynamic from a recomputed one.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from dal import DataObject, Dynamic, Property, Relation

#: (dynamic name, guid) -> number of loader calls in this process
LOADER_CALLS: Counter[tuple[str, str]] = Counter()

STATUSES = ["NEW", "RUNNING", "STOPPED"]


class Kind(DataObject):
    """A kind of widget: one plain property and one unique, indexed code."""

    __properties = [Property("name", str, doc="Display name."),
                    Property("code", str, unique=True, indexed=True, doc="Short code.")]
    __relations: list[Relation] = []
    __dynamics: list[Dynamic] = []


class Widget(DataObject):
    """Every property type, defaults, unique and indexed fields, two relations and dynamics."""

    __properties = [
        Property("name", str, unique=True, indexed=True, doc="Unique name."),
        Property("count", int, default=0, indexed=True),
        Property("ratio", float, default=0.5, mandatory=False),
        Property("enabled", bool, default=True),
        Property("tags", list, default=[], mandatory=False),
        Property("meta", dict, default={}, mandatory=False),
        Property("status", STATUSES, default="NEW"),
        Property("numbers", list[int], default=[], mandatory=False),
        Property("created", dt.datetime, mandatory=False),
        Property("serial", str, unique=True, mandatory=False, doc="Optional unique field."),
        Property("note", str, mandatory=False),
    ]
    __relations = [Relation("kind", Kind, "widgets"),
                   Relation("alt_kind", Kind, "alt_widgets", mandatory=False)]
    __dynamics = [Dynamic("doubled", int, 3600),
                  Dynamic("fresh", int, 0),
                  Dynamic("spec_name", str, 3600)]

    def _doubled(self) -> int:
        LOADER_CALLS["doubled", self.guid] += 1
        return self.count * 2

    def _fresh(self) -> int:
        LOADER_CALLS["fresh", self.guid] += 1
        return LOADER_CALLS["fresh", self.guid]

    def _spec_name(self, dynamic: Dynamic) -> str:
        LOADER_CALLS["spec_name", self.guid] += 1
        return f"{dynamic.qualified}:{dynamic.timeout}"


class SuperWidget(Widget):
    """Inherits every Widget spec and adds its own."""

    __properties = [Property("power", int, default=1)]
    __dynamics = [Dynamic("powered", int, 3600)]

    def _powered(self) -> int:
        LOADER_CALLS["powered", self.guid] += 1
        return self.count * self.power


class Gadget(DataObject):
    """A hybrid with a misbehaving dynamic and a unique field taking several JSON types."""

    __properties = [Property("token", int | str | bool, unique=True, mandatory=False),
                    Property("label", str, mandatory=False)]
    __dynamics = [Dynamic("broken", int, 60)]

    def _broken(self) -> Any:
        return "not an int"
