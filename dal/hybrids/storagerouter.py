"""``StorageRouter``: a node that serves storage (a host running the storage stack)."""

from __future__ import annotations

from typing import Any

from dal.dataobject import DataObject
from dal.structures import Property


class StorageRouter(DataObject):
    """A storage node."""

    name: str
    ip: str

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True, doc="Host name of the node."),
        Property("ip", str, unique=True, doc="Management IP address."),
    ]
