"""Successive versions of one small model, for schema-record and migration tests.

``declare(version, prefix)`` (re)declares the hybrids ``<prefix>owner`` and ``<prefix>disk``
as that version of the model. Every version is declared by the same class statements (same
module and qualified name), so the registry lets a newer version replace an older one under
the same stored names, as a redeployed process would see it.

- version 1: Disk(name indexed, size=0, serial, legacy indexed+unique, relation user -> Owner)
- version 2: serial becomes unique, legacy is neither indexed nor unique, new tier (default
  'silver', indexed)
- version 3: version 2 with size renamed size_bytes, relation user renamed owner, and a
  generation counter that a transform step increments (see ``steps``)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dal import DataObject, Property, Relation
from dal.config import Context
from dal.model.meta import HybridMeta
from dal.tools.migrate.migrations import Migration, Step


@dataclass(frozen=True)
class Model:
    owner: Any
    disk: Any


def declare(version: int, prefix: str = "mg") -> Model:
    owner_name, disk_name = f"{prefix}owner", f"{prefix}disk"

    class MigOwner(DataObject, hybrid_name=owner_name):
        __properties: list[Property[Any]] = [Property("name", str)]

    if version == 1:
        class MigDisk(DataObject, hybrid_name=disk_name):
            __properties: list[Property[Any]] = [Property("name", str, indexed=True),
                            Property("size", int, default=0),
                            Property("serial", str, mandatory=False),
                            Property("legacy", str, indexed=True, unique=True, mandatory=False)]
            __relations = [Relation("user", MigOwner, "disks", mandatory=False)]
    elif version == 2:
        class MigDisk(DataObject, hybrid_name=disk_name):  # type: ignore[no-redef]
            __properties: list[Property[Any]] = [Property("name", str, indexed=True),
                            Property("size", int, default=0),
                            Property("serial", str, unique=True, mandatory=False),
                            Property("legacy", str, mandatory=False),
                            Property("tier", ["gold", "silver"], default="silver", indexed=True)]
            __relations = [Relation("user", MigOwner, "disks", mandatory=False)]
    else:
        class MigDisk(DataObject, hybrid_name=disk_name):  # type: ignore[no-redef]
            __properties: list[Property[Any]] = [Property("name", str, indexed=True),
                            Property("size_bytes", int, default=0),
                            Property("serial", str, unique=True, mandatory=False),
                            Property("legacy", str, mandatory=False),
                            Property("tier", ["gold", "silver"], default="silver", indexed=True),
                            Property("generation", int, default=0)]
            __relations = [Relation("owner", MigOwner, "disks", mandatory=False)]
    return Model(MigOwner, MigDisk)


def rename(model: Model) -> Any:
    def describe(step: Step) -> None:
        step.rename_property(model.disk, "size", "size_bytes")
        step.rename_relation(model.disk, "user", "owner")
    return describe


def count_generation(doc: dict[str, Any]) -> dict[str, Any]:
    """Not idempotent on purpose: running it twice on one object would show."""
    return {**doc, "generation": doc.get("generation", 0) + 1}


def bump(model: Model) -> Any:
    def describe(step: Step) -> None:
        step.transform(model.disk, count_generation)
    return describe


def steps(model: Model) -> list[Migration]:
    """The steps from version 1 to version 3."""
    return [Migration(1, "rename Disk.size and Disk.user", rename(model)),
            Migration(2, "count generations", bump(model))]


# --- what tests assert on: the raw store ------------------------------------------------------


def dump(context: Context) -> dict[str, bytes]:
    """Return every durable key of the context's namespace and its value, but the commit journal's
    records (``x/``), which come and go with commits."""
    journal = context.keys.journal()
    return {key: entry.value for key, entry in context.persistent.scan(context.keys.root)
            if not key.startswith(journal)}


def documents(context: Context, meta: HybridMeta) -> dict[str, dict[str, Any]]:
    prefix = context.keys.docs(meta.name)
    return {key[len(prefix):]: json.loads(entry.value) for key, entry in context.persistent.scan(prefix)}


def key_state(context: Context, meta: HybridMeta) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Return (the index and unique keys stored for a hybrid, those its documents and model call for).

    What ``dal check`` verifies: every document has exactly its keys, each unique key names its
    owner, and nothing else is stored under the hybrid's index and unique prefixes.
    """
    keys = context.keys
    stored = {key: entry.value for prefix in (keys.index_fields(meta.name), keys.unique_fields(meta.name))
              for key, entry in context.persistent.scan(prefix)}
    wanted: dict[str, bytes] = {}
    for guid, doc in documents(context, meta).items():
        for prop in meta.indexed:
            wanted[keys.index(meta.name, prop.name, doc.get(prop.name), guid)] = b""
        for prop in meta.unique:
            if doc.get(prop.name) is not None:
                wanted[keys.unique(meta.name, prop.name, doc[prop.name])] = guid.encode()
    return stored, wanted
