"""Hybrids for the race tests, importable by spawned worker processes."""

from __future__ import annotations

from dal import DataObject, Property


class Tally(DataObject):
    """A named counter: the stress tests increment it from several processes."""

    __properties = [Property("label", str, unique=True),
                    Property("count", int, default=0),
                    Property("note", str, mandatory=False)]
