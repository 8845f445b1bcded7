"""``Cluster``: a cluster manager whose virtual machines dal mirrors, and how to reach its API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.clients import ClientCache
from dal.hybrids.remoteapi import RemoteAPI
from dal.objects.dataobject import DataObject
from dal.structures import Property

if TYPE_CHECKING:
    from dal.hybrids.virtualmachine import VirtualMachine
    from dal.query.datalist import DataList

#: one client per connection settings, shared by every Cluster object of this process
CLIENTS: ClientCache[RemoteAPI] = ClientCache(RemoteAPI)


class Cluster(DataObject):
    """A cluster manager (Ganeti, in the seed system) with a JSON API its virtual machines come from."""

    name: str
    host: str
    port: int
    username: str | None
    password: str | None
    # reverse accessors, installed by the relations that point here
    virtual_machines: DataList[VirtualMachine]
    virtual_machines_guids: list[str]

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True, doc="Name of the cluster."),
        Property("host", str, doc="Host of its remote API."),
        Property("port", int, doc="Port of its remote API."),
        Property("username", str, mandatory=False, doc="User its API is called as, if it wants one."),
        # the demo's remote is a toy: keep a real cluster's secrets out of the store
        Property("password", str, mandatory=False, doc="That user's password."),
    ]

    def settings(self) -> dict[str, Any]:
        """Return the connection settings of its remote API."""
        return {"host": self.host, "port": self.port, "username": self.username, "password": self.password}

    def client(self) -> RemoteAPI:
        """Return the client of its remote API: one per settings, a changed setting gets a new one."""
        # owned by this cluster, so changing its settings closes the client of the old ones
        return CLIENTS.get(self.settings(), owner=self.guid)
