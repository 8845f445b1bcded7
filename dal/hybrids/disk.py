"""``Disk``: a disk a storage router serves, maybe placed in a pool; clones point at their parent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.hybrids.storagerouter import StorageRouter
from dal.objects.dataobject import DataObject
from dal.structures import Dynamic, Property, Relation

if TYPE_CHECKING:
    from dal.hybrids.pool import Pool
    from dal.query.datalist import DataList

STATES = ["NEW", "ONLINE", "OFFLINE", "FAILURE", "DECOMMISSIONED"]


class Disk(DataObject):
    """A disk served by a storage router; a clone records the disk it was cloned from."""

    name: str
    size: int
    serial: str | None
    state: str
    storagerouter: StorageRouter | None
    storagerouter_guid: str | None
    pool: Pool | None
    pool_guid: str | None
    parent: Disk | None
    parent_guid: str | None
    usage: dict[str, Any]
    # reverse accessor of the self relation `parent`
    clones: DataList[Disk]
    clones_guids: list[str]

    __properties: list[Property[Any]] = [
        Property("name", str, indexed=True, doc="Device name on its node, e.g. 'sdb'."),
        Property("size", int, doc="Capacity in bytes."),
        # optional and unique: any number of disks may leave it unset (None is never a unique value)
        Property("serial", str, mandatory=False, unique=True, doc="Serial number the device reports."),
        Property("state", STATES, default="NEW", doc="Last state the storage router reported."),
    ]
    # "Pool" by name: pool.py registers after this module (a forward reference)
    __relations = [Relation("storagerouter", StorageRouter, "disks", doc="The node serving the disk."),
                   Relation("pool", "Pool", "disks", mandatory=False, doc="The pool it stores data for."),
                   Relation("parent", None, "clones", mandatory=False, doc="The disk it was cloned from.")]
    # locked: in a real model this asks the storage driver, which callers should not stampede
    __dynamics = [Dynamic("usage", dict, 10, locked=True, doc="Size, clones and state, as a driver reports.")]

    def _usage(self) -> dict[str, Any]:
        """Return what a storage driver would report about the disk (derived from the model here)."""
        return {"size": self.size, "clones": len(self.clones_guids), "state": self.state,
                "clone_of": self.parent_guid}
