"""``AlbaBackend``: the ALBA plugin's details of a backend (one-to-one with ``Backend``)."""

from __future__ import annotations

from typing import Any

from dal.hybrids.backend import Backend
from dal.objects.dataobject import DataObject
from dal.structures import Dynamic, Property, Relation


class AlbaBackend(DataObject):
    """ALBA-specific settings of a backend whose type has a plugin."""

    scaling: str
    backend: Backend | None
    available: bool

    __properties: list[Property[Any]] = [
        Property("scaling", ["LOCAL", "GLOBAL"], default="LOCAL", doc="Where the backend spreads data."),
    ]
    __relations = [Relation("backend", Backend, "alba_backend", onetoone=True, doc="The backend detailed.")]
    __dynamics = [Dynamic("available", bool, 30)]

    def _available(self) -> bool:
        """Return whether the backend runs and at least one node serves it."""
        backend = self.backend
        return backend is not None and backend.status == "RUNNING" and bool(backend.storagerouters_guids)
