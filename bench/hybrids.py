"""The hybrid the benchmarks load and save: a realistic, mid-sized record.

Seven properties of the everyday kinds (str, int, list, dict, an enum), one of them unique
and one indexed, so a save writes the usual three keys: document, unique key, index entry.
A stored document is about 600 bytes of JSON.
"""

from __future__ import annotations

from typing import Any

from dal import DataObject, Dynamic, Property, Relation

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
