"""``Pool``: a storage pool of a backend, the group of disks that holds its data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.hybrids.backend import Backend
from dal.objects.dataobject import DataObject
from dal.structures import Dynamic, Property, Relation

if TYPE_CHECKING:
    from dal.hybrids.disk import Disk
    from dal.query.datalist import DataList

STATES = ["CREATING", "AVAILABLE", "DEGRADED", "OFFLINE", "DELETING"]


class Pool(DataObject):
    """A storage pool; it belongs to one backend (many-to-one) and groups disks."""

    name: str
    size: int
    state: str
    backend: Backend | None
    backend_guid: str | None
    disk_count: int
    # reverse accessors, installed by the relations that point here
    disks: DataList[Disk]
    disks_guids: list[str]

    __properties: list[Property[Any]] = [
        Property("name", str, indexed=True, doc="Name of the pool, shown to operators."),
        Property("size", int, default=0, doc="Provisioned capacity in bytes."),
        Property("state", STATES, default="CREATING", doc="Life-cycle state of the pool."),
    ]
    __relations = [Relation("backend", Backend, "pools", doc="The backend whose data the pool holds.")]
    # one link scan is cheaper than a cache round trip plus invalidations: never cached
    __dynamics = [Dynamic("disk_count", int, 0, doc="Number of disks in the pool now.")]

    def _disk_count(self) -> int:
        """Return how many disks the pool holds."""
        return len(self.disks_guids)
