"""Hybrids for the dump/load/copy/check tests: every key kind, a self relation and a cycle.

Class names start with ``X`` because hybrid names are process-wide and other test modules
declare their own racks and servers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dal import DataList, DataObject, Property, Relation

STATUSES = ["NEW", "UP", "DOWN"]


class XRack(DataObject):
    """A target: unique and indexed properties."""

    name: str
    row: int
    servers: DataList[XServer]
    servers_guids: list[str]
    spares_guids: list[str]

    __properties: list[Property[Any]] = [Property("name", str, unique=True, indexed=True),
                                         Property("row", int, default=0, indexed=True)]


class XServer(DataObject):
    """Points at racks (one mandatory relation, one optional); several property types."""

    hostname: str
    status: str
    tags: list[str]
    installed: dt.datetime | None
    load: float
    serial: str | None
    rack: XRack | None
    rack_guid: str | None
    spare_rack: XRack | None
    spare_rack_guid: str | None
    console: XConsole | None
    console_guid: str | None

    __properties: list[Property[Any]] = [
        Property("hostname", str, unique=True),
        Property("status", STATUSES, default="NEW", indexed=True),
        Property("tags", list[str], default=[], mandatory=False),
        Property("installed", dt.datetime, mandatory=False),
        Property("load", float, default=0.0),
        Property("serial", str, unique=True, mandatory=False),
    ]
    __relations = [Relation("rack", XRack, "servers"),
                   Relation("spare_rack", XRack, "spares", mandatory=False)]


class XConsole(DataObject):
    """At most one per server (one-to-one)."""

    port: int
    server: XServer | None
    server_guid: str | None

    __properties: list[Property[Any]] = [Property("port", int)]
    __relations = [Relation("server", XServer, "console", onetoone=True, mandatory=False)]


class XNode(DataObject):
    """A tree: a node's parent is a node (a self relation)."""

    name: str
    parent: XNode | None
    parent_guid: str | None
    children_guids: list[str]

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("parent", None, "children", mandatory=False)]


class XPeer(DataObject):
    """Points at an XBuddy, which may point back: a cycle across two hybrids."""

    name: str | None
    buddy: XBuddy | None
    buddy_guid: str | None

    __properties: list[Property[Any]] = [Property("name", str, mandatory=False)]
    __relations = [Relation("buddy", "XBuddy", "peers", mandatory=False)]


class XBuddy(DataObject):
    """The other side of the cycle."""

    name: str | None
    peer: XPeer | None
    peer_guid: str | None

    __properties: list[Property[Any]] = [Property("name", str, mandatory=False)]
    __relations = [Relation("peer", XPeer, "buddies", mandatory=False)]
