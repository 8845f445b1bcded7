"""``StorageRouter``: a node that serves storage (a host running the storage stack)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.objects.dataobject import DataObject
from dal.structures import Dynamic, Property

if TYPE_CHECKING:
    from dal.hybrids.backendstoragerouter import BackendStorageRouter
    from dal.hybrids.disk import Disk
    from dal.query.datalist import DataList


class StorageRouter(DataObject):
    """A storage node."""

    name: str
    ip: str
    machine_id: str | None
    status: str
    node_type: str
    capacity: dict[str, int]
    # reverse accessors, installed by the relations that point here
    backends: DataList[BackendStorageRouter]
    backends_guids: list[str]
    disks: DataList[Disk]
    disks_guids: list[str]

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True, doc="Host name of the node."),
        Property("ip", str, unique=True, doc="Management IP address."),
        # optional: a node is registered before its agent reports the machine id
        Property("machine_id", str, mandatory=False, indexed=True, doc="Hardware id its agent reports."),
        Property("status", ["ONLINE", "OFFLINE", "FAILURE", "UNKNOWN"], default="UNKNOWN",
                 doc="Last state the node's agent reported."),
        Property("node_type", ["MASTER", "EXTRA"], default="EXTRA",
                 doc="MASTER nodes run the cluster's services, EXTRA nodes only serve storage."),
    ]
    __dynamics = [Dynamic("capacity", dict, 60, doc="Disks it serves: count, online count, total bytes.")]

    def _capacity(self) -> dict[str, int]:
        """Return the number of disks, how many are online, and their total size in bytes."""
        disks = list(self.disks)  # one link scan and one batch load, whatever the count
        return {"disks": len(disks),
                "online": sum(1 for disk in disks if disk.state == "ONLINE"),
                "size": sum(disk.size for disk in disks)}
