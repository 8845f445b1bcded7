"""The hybrids the benchmarks load and save: realistic records.

``BenchMachine`` has seven properties of the everyday kinds (str, int, list, dict, an enum),
one of them unique and one indexed, so a save writes the usual three keys: document, unique
key, index entry. A stored document is about 560 bytes of JSON.

``BenchPool`` and ``BenchVolume`` are a parent and its children: a volume lives in exactly
one pool (a mandatory relation, reverse list ``pool.volumes``). A volume has a few plain
properties and neither a unique nor an indexed one, so saving a new volume writes exactly
two keys, its document and its link under the pool, guarded by "document absent" and "pool
exists". A stored volume document is about 160 bytes of JSON.

``BenchServer`` has dynamics: ``health``, a small dict (six fields, about 140 bytes of JSON)
cached for an hour, and ``inventory``, a ``locked=True`` dynamic whose loader sleeps
``INVENTORY_SECONDS`` (100 ms) and records each of its calls in ``INVENTORY_CALLS``.

``BenchRecord`` is what the query benchmarks select: ``group`` is indexed (``record_data``
puts record ``n`` in group ``n % groups``), ``size`` is not (spread evenly over 0..9,999),
``name`` is unique. A stored record is about 130 bytes of JSON.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dal import DataObject, Dynamic, Property, Relation

if TYPE_CHECKING:
    from dal.query.datalist import DataList

STATUSES = ["PROVISIONING", "RUNNING", "STOPPED", "DECOMMISSIONED"]


class BenchMachine(DataObject):
    """A machine in an inventory."""

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True, doc="Host name, unique in the inventory."),
        Property("owner", str, doc="Team that owns the machine."),
        Property("cores", int, default=1),
        Property("memory_mb", int, default=1024),
        Property("tags", list, default=[], mandatory=False),
        Property("settings", dict, default={}, mandatory=False),
        Property("status", STATUSES, default="PROVISIONING", indexed=True),
    ]
    __relations: list[Relation] = []
    __dynamics: list[Dynamic] = []


class BenchPool(DataObject):
    """A storage pool: the parent of many volumes."""

    name: str
    backend: str
    capacity_gb: int
    # reverse accessors, installed by BenchVolume.pool
    volumes: DataList[BenchVolume]
    volumes_guids: list[str]

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True, doc="Pool name, unique in the inventory."),
        Property("backend", ["ceph", "alba", "nfs"], default="ceph"),
        Property("capacity_gb", int, default=0),
    ]
    __relations: list[Relation] = []
    __dynamics: list[Dynamic] = []


VOLUME_STATUSES = ["CREATING", "AVAILABLE", "IN_USE", "DELETING"]


class BenchVolume(DataObject):
    """A volume, always in one pool."""

    name: str
    size_gb: int
    status: str
    options: dict[str, Any]
    pool: BenchPool
    pool_guid: str

    __properties: list[Property[Any]] = [
        Property("name", str, doc="Volume name (unique only by convention)."),
        Property("size_gb", int, default=10),
        Property("status", VOLUME_STATUSES, default="CREATING"),
        Property("options", dict, default={}, mandatory=False),
    ]
    __relations: list[Relation] = [Relation("pool", BenchPool, "volumes")]
    __dynamics: list[Dynamic] = []


#: how long the ``BenchServer.inventory`` loader takes (it sleeps, like a slow remote call)
INVENTORY_SECONDS = 0.1


@dataclass
class LoaderCalls:
    """Calls of a loader per object guid, and how long each took; exact under threads."""

    calls: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, guid: str, seconds: float) -> None:
        with self.lock:
            self.calls.setdefault(guid, []).append(seconds)

    def of(self, guid: str) -> list[float]:
        """Return the durations of every call for ``guid`` so far."""
        with self.lock:
            return list(self.calls.get(guid, ()))


#: every call of ``BenchServer._inventory``
INVENTORY_CALLS = LoaderCalls()


class BenchServer(DataObject):
    """A monitored server whose health and inventory are computed, then cached."""

    name: str
    rack: int
    health: dict[str, Any]
    inventory: dict[str, Any]

    __properties: list[Property[Any]] = [
        Property("name", str, doc="Host name."),
        Property("rack", int, default=0),
    ]
    __relations: list[Relation] = []
    __dynamics: list[Dynamic] = [
        Dynamic("health", dict, 3600, doc="A health summary: cheap to compute, read very often."),
        Dynamic("inventory", dict, 3600, locked=True, lock_timeout=10.0,
                doc="A hardware inventory: slow to compute, so computed once (single flight)."),
    ]

    def _health(self) -> dict[str, Any]:
        number = self.rack
        return {
            "status": ("ok", "degraded")[number % 7 == 0],
            "cpu_pct": round(12.5 + number % 80 * 0.75, 2),
            "load": [round(0.4 + number % 9 * 0.1, 2), 0.52, 0.61],
            "memory_free_mb": 48213 - number % 1000,
            "disks_ok": 3,
            "checked_at": f"2024-05-{1 + number % 28:02d}T12:{number % 60:02d}:07Z",
        }

    def _inventory(self) -> dict[str, Any]:
        started = time.perf_counter()
        time.sleep(INVENTORY_SECONDS)
        value = {"cpus": 2, "cores": 32, "memory_gb": 256, "disks": ["nvme0n1", "nvme1n1", "nvme2n1"]}
        INVENTORY_CALLS.record(self.guid, time.perf_counter() - started)
        return value


def volume_data(number: int, prefix: str = "vol") -> dict[str, Any]:
    """Return the property values of volume ``number`` (its pool is set by the caller)."""
    return {
        "name": f"{prefix}-{number:06d}",
        "size_gb": 10 << (number % 6),
        "status": VOLUME_STATUSES[number % 3],
        "options": {"thin": number % 2 == 0, "replicas": 3, "qos": {"iops": 1000 * (1 + number % 5)}},
    }


def machine_data(number: int, prefix: str = "node") -> dict[str, Any]:
    """Return the property values of machine ``number`` (``name`` unique per ``prefix``)."""
    return {
        "name": f"{prefix}-{number:06d}.rack{number % 40:02d}.dc1.example.net",
        "owner": ("storage", "compute", "network", "platform")[number % 4],
        "cores": 8 << (number % 4),
        "memory_mb": 16384 << (number % 3),
        "tags": ["ssd", "10gbe", f"rack{number % 40:02d}", "ubuntu-22.04", "monitored"],
        "settings": {
            "kernel": "6.1.0-18-amd64",
            "bios": {"version": "2.14.1", "boot_mode": "uefi", "virtualization": True},
            "disks": [{"device": f"/dev/nvme{i}n1", "size_gb": 1920, "role": "data"} for i in range(3)],
            "network": {"mtu": 9000, "bond": "802.3ad", "vlans": [100, 200, 300 + number % 50]},
            "maintenance_window": "sun 02:00-04:00",
        },
        "status": STATUSES[number % 2],
    }


#: groups of the full-size query benchmarks (100,000 records: 100 per group)
GROUPS = 1000


class BenchRecord(DataObject):
    """A record the query benchmarks select: by its indexed ``group``, or by its plain ``size``."""

    name: str
    group: str
    size: int
    status: str
    labels: dict[str, Any]

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True, doc="Record name, unique."),
        Property("group", str, indexed=True, doc="One of GROUPS groups: an index lookup's value."),
        Property("size", int, default=0, doc="Not indexed: a query on it scans."),
        Property("status", STATUSES, default="PROVISIONING"),
        Property("labels", dict, default={}, mandatory=False),
    ]
    __relations: list[Relation] = []
    __dynamics: list[Dynamic] = []


def group_name(number: int) -> str:
    """Return the name of group ``number``."""
    return f"g{number:05d}"


def record_data(number: int, groups: int = GROUPS) -> dict[str, Any]:
    """Return the property values of record ``number``: it is in group ``number % groups``."""
    return {
        "name": f"rec-{number:07d}",
        "group": group_name(number % groups),
        "size": number * 7919 % 10000,  # spread over 0..9999 independently of the group
        "status": STATUSES[number % 3],
        "labels": {"tier": ("gold", "silver", "bronze")[number % 3], "zone": f"z{number % 8}",
                   "owner": ("storage", "compute", "network")[number % 3]},
    }
