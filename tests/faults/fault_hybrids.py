"""Hybrids of the fault suite, importable by its spawned worker processes."""

from __future__ import annotations

from dal import DataObject, Dynamic, Property


class Counter(DataObject):
    """A named counter: fault scenarios increment it from several processes and read it back."""

    __properties = [Property("label", str, unique=True),
                    Property("count", int, default=0, indexed=True),
                    Property("note", str, mandatory=False)]
    __dynamics = [Dynamic("doubled", int, 60)]

    def _doubled(self) -> int:
        return 2 * self.count
