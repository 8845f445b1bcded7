"""``Backend``: a configured storage backend, as in Open vStorage's model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.hybrids.backendtype import BackendType
from dal.objects.dataobject import DataObject
from dal.structures import Dynamic, Property, Relation

if TYPE_CHECKING:
    from dal.hybrids.albabackend import AlbaBackend
    from dal.hybrids.backendstoragerouter import BackendStorageRouter
    from dal.hybrids.pool import Pool
    from dal.query.datalist import DataList


class Backend(DataObject):
    """A configured storage backend."""

    name: str
    status: str
    tags: list[str]
    backend_type: BackendType | None
    backend_type_guid: str | None
    linked_guid: str | None
    available: bool
    # reverse accessors, installed by the relations that point here
    storagerouters: DataList[BackendStorageRouter]
    storagerouters_guids: list[str]
    alba_backend: AlbaBackend | None
    alba_backend_guid: str | None
    pools: DataList[Pool]
    pools_guids: list[str]

    __properties: list[Property[Any]] = [Property("name", str, unique=True, doc="Name of the Backend."),
                    Property("status", ["NEW", "INSTALLING", "RUNNING", "STOPPED", "FAILURE", "UNKNOWN"],
                             default="NEW", doc="State of the backend"),
                    Property("tags", list, default=[], mandatory=False, doc="Free-form labels.")]
    __relations = [Relation("backend_type", BackendType, "backends", doc="Type of the backend.")]
    __dynamics = [Dynamic("linked_guid", str, 3600),
                  Dynamic("available", bool, 60, locked=True)]

    def _linked_guid(self) -> str | None:
        """Return the guid of the plugin object detailing this backend (its ``<code>_backend``)."""
        backend_type = self.backend_type
        if backend_type is None or not backend_type.has_plugin:
            return None
        linked = getattr(self, f"{backend_type.code}_backend", None)
        return None if linked is None else str(linked.guid)

    def _available(self) -> bool:
        """Return whether the backend can be used: it runs, and its plugin object (if any) is available."""
        if self.status != "RUNNING":
            return False
        backend_type = self.backend_type
        if backend_type is None or not backend_type.has_plugin:
            return True
        linked = getattr(self, f"{backend_type.code}_backend", None)
        return bool(linked is not None and getattr(linked, "available", False))
