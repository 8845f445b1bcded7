"""``VirtualMachine``: a virtual machine of a cluster, mirrored from the cluster's remote API.

dal keeps a copy of each instance the remote knows (GWM's cache of Ganeti's RAPI): the last
answer in ``info``, parsed into the queryable ``status`` (indexed) and ``ram``. A stale
object refreshes itself on its first read, a list of stale ones with one bulk call, and
``dal refresh`` refreshes them all in the background; ``owner`` is dal's own data, which no
refresh touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dal.hybrids.cluster import Cluster
from dal.hybrids.remoteapi import RemoteAPIError
from dal.objects.dataobject import DataObject
from dal.structures import Mirror, Property, Relation


class VirtualMachine(DataObject):
    """A virtual machine, mirrored from its cluster's remote API."""

    hostname: str
    status: str | None
    ram: int | None
    owner: str | None
    cluster: Cluster | None
    cluster_guid: str | None
    # the mirror's own attributes
    info: dict[str, Any] | None
    cached_at: float | None
    error: str | None
    ignore_cache: bool
    stale: bool

    __properties: list[Property[Any]] = [
        Property("hostname", str, unique=True, doc="Name of the instance on its cluster."),
        Property("status", str, mandatory=False, indexed=True,
                 doc="Parsed from the remote: running, ADMIN_down, ERROR_down."),
        Property("ram", int, mandatory=False, doc="Memory in MiB, parsed from the remote."),
        Property("owner", str, mandatory=False, doc="Who it is for: dal's own data, never refreshed."),
    ]
    __relations = [Relation("cluster", Cluster, "virtual_machines", doc="The cluster it runs on.")]
    # the bulk refresher passes every 5 minutes; a read refreshes what it left older than 10
    __mirror = Mirror(timeout=600, refresh_every=300)

    def _refresh(self) -> dict[str, Any]:
        """Return this instance's info from its cluster's remote API (one call)."""
        cluster = self.cluster
        if cluster is None:
            raise RemoteAPIError(f"virtual machine {self.hostname!r} has no cluster to ask")
        return cluster.client().get_instance(self.hostname)

    @classmethod
    def _refresh_many(cls, objects: Sequence[VirtualMachine]) -> dict[str, dict[str, Any]]:
        """Return ``{guid: info}`` for ``objects``: one bulk call per cluster they run on.

        An instance its cluster does not list is left out of the answer.
        """
        by_cluster: dict[str, list[VirtualMachine]] = {}
        for machine in objects:
            if machine.cluster_guid is not None:
                by_cluster.setdefault(machine.cluster_guid, []).append(machine)
        found: dict[str, dict[str, Any]] = {}
        for guid, machines in by_cluster.items():
            listed = {str(info.get("name")): info for info in Cluster(guid).client().get_instances()}
            found.update({str(m.guid): listed[m.hostname] for m in machines if m.hostname in listed})
        return found

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        """Return the properties stored (and indexed) from an answer: its status and memory size."""
        return {"status": info["status"], "ram": info["beparams"]["memory"]}
