"""The bundled sample model (``dal/hybrids/``): its newer hybrids Pool and Disk and StorageRouter's fields.

The older hybrids (BackendType, Backend, BackendStorageRouter, AlbaBackend) are covered by
the demo's tests in tests/test_cli.py.
"""

from __future__ import annotations

import importlib

import pytest

import dal.hybrids
from dal import DataList
from dal.config import Context
from dal.exceptions import (
    InvalidValueError,
    LinkedObjectError,
    MissingMandatoryFieldsError,
    UniqueConstraintError,
)
from dal.hybrids import Backend, BackendType, Disk, Pool, StorageRouter

GIB = 1 << 30


def platform() -> tuple[Backend, Pool, StorageRouter]:
    """Save a backend with one pool, and a node to serve its disks."""
    kind = BackendType(data={"name": "ALBA", "code": "alba"})
    kind.save()
    backend = Backend(data={"name": "b1", "backend_type": kind})
    backend.save()
    pool = Pool(data={"name": "fast", "backend": backend, "size": 4 * GIB})
    pool.save()
    node = StorageRouter(data={"name": "node1", "ip": "10.0.0.1", "machine_id": "m-1"})
    node.save()
    return backend, pool, node


def disk(node: StorageRouter, name: str, **data: object) -> Disk:
    made = Disk(data={"name": name, "size": GIB, "storagerouter": node, **data})
    made.save()
    return made


def test_every_hybrid_has_its_own_module_named_for_it() -> None:
    for name in dal.hybrids.__all__:
        cls = getattr(dal.hybrids, name)
        assert cls.__module__ == f"dal.hybrids.{name.lower()}"
        assert importlib.import_module(cls.__module__).__dict__[name] is cls


def test_specs_of_the_new_hybrids() -> None:
    parent = Disk._meta.relations["parent"]
    assert parent.target is Disk and parent.foreign_key == "clones" and not parent.mandatory
    assert Disk._meta.relations["pool"].target is Pool  # declared by name, resolved when Pool registered
    assert [p.name for p in Disk._meta.unique] == ["serial"]
    usage = Disk._meta.dynamics["usage"]
    assert usage.locked and usage.timeout == 10
    assert Pool._meta.dynamics["disk_count"].timeout == 0
    assert [p.name for p in StorageRouter._meta.indexed] == ["machine_id"]
    assert set(Backend._meta.reverse) == {"alba_backend", "storagerouters", "pools"}
    assert set(StorageRouter._meta.reverse) == {"backends", "disks"}


def test_storage_router_defaults_and_enums(context: Context) -> None:
    node = StorageRouter(data={"name": "n", "ip": "10.0.0.9"})  # what the demo saves: still enough
    node.save()
    loaded = StorageRouter(node.guid)
    assert (loaded.status, loaded.node_type, loaded.machine_id) == ("UNKNOWN", "EXTRA", None)
    with pytest.raises(InvalidValueError, match=r"StorageRouter\.status"):
        loaded.status = "BROKEN"
    with pytest.raises(UniqueConstraintError, match=r"StorageRouter\.ip"):
        StorageRouter(data={"name": "other", "ip": "10.0.0.9"}).save()


def test_pool_belongs_to_a_backend(context: Context) -> None:
    backend, pool, _ = platform()
    assert Pool(pool.guid).backend == backend and backend.pools_guids == [pool.guid]
    assert Pool(pool.guid).state == "CREATING"
    with pytest.raises(MissingMandatoryFieldsError, match="backend"):
        Pool(data={"name": "orphan"}).save()
    with pytest.raises(InvalidValueError, match=r"Pool\.state"):
        pool.state = "FULL"
    with pytest.raises(LinkedObjectError):
        backend.delete()


def test_disk_links_to_node_and_pool_and_its_clones(context: Context) -> None:
    _, pool, node = platform()
    base = disk(node, "sdb", pool=pool, serial="S1")
    clone = disk(node, "sdb-clone", parent=base)
    second = disk(node, "sdb-clone2", parent=base)

    loaded = Disk(clone.guid)
    assert loaded.parent == base and loaded.parent_guid == base.guid
    assert loaded.parent is not None and loaded.parent.name == "sdb"
    assert loaded.pool is None and loaded.storagerouter == node
    assert sorted(Disk(base.guid).clones_guids) == sorted([clone.guid, second.guid])
    assert sorted(d.name for d in base.clones) == ["sdb-clone", "sdb-clone2"]
    assert Disk(base.guid).parent is None and clone.clones_guids == []
    assert pool.disks_guids == [base.guid]
    assert sorted(node.disks_guids) == sorted([base.guid, clone.guid, second.guid])


def test_a_parent_with_clones_is_deleted_only_by_abandoning_them(context: Context) -> None:
    _, _, node = platform()
    base = disk(node, "sdb")
    clone = disk(node, "sdb-clone", parent=base)
    with pytest.raises(LinkedObjectError, match="clones"):
        base.delete()
    base.delete(abandon=["clones"])
    orphan = Disk(clone.guid)
    assert orphan.parent is None and orphan.parent_guid is None


def test_a_node_serving_disks_cannot_be_deleted(context: Context) -> None:
    _, _, node = platform()
    served = disk(node, "sdb")
    with pytest.raises(MissingMandatoryFieldsError, match="storagerouter"):
        Disk(data={"name": "x", "size": 1}).save()
    with pytest.raises(LinkedObjectError):
        node.delete(abandon=["disks"])  # mandatory on the disk's side: cannot be abandoned
    assert Disk(served.guid).storagerouter_guid == node.guid


def test_disk_serial_is_unique_only_when_set(context: Context) -> None:
    _, _, node = platform()
    disk(node, "a", serial="S1")
    with pytest.raises(UniqueConstraintError, match=r"Disk\.serial"):
        disk(node, "b", serial="S1")
    unset = [disk(node, f"n{i}") for i in range(2)]  # no serial: never a unique value
    assert all(Disk(d.guid).serial is None for d in unset)


def test_dynamics_of_the_new_hybrids(context: Context) -> None:
    _, pool, node = platform()
    base = disk(node, "sdb", pool=pool, state="ONLINE")
    assert base.usage == {"size": GIB, "clones": 0, "state": "ONLINE", "clone_of": None}
    clone = disk(node, "clone", parent=base, pool=pool)
    assert base.usage["clones"] == 0, "cached for its TTL: a clone's save does not touch its parent"
    base.invalidate_dynamics(["usage"])
    assert base.usage["clones"] == 1
    assert clone.usage["clone_of"] == base.guid
    assert pool.disk_count == 2  # timeout 0: never cached, so a new disk shows at once
    disk(node, "third", pool=pool)
    assert pool.disk_count == 3
    assert node.capacity == {"disks": 3, "online": 1, "size": 3 * GIB}


def test_queries_through_the_new_relations(context: Context) -> None:
    _, pool, node = platform()
    other = StorageRouter(data={"name": "node2", "ip": "10.0.0.2", "machine_id": "m-2"})
    other.save()
    disk(node, "a", pool=pool)
    disk(other, "b", pool=pool)
    disk(other, "c")
    on_node2 = DataList(Disk, {"type": DataList.where_operator.AND,
                               "items": [("storagerouter.name", DataList.operator.EQUALS, "node2"),
                                         ("pool.backend.name", DataList.operator.EQUALS, "b1")]})
    assert [d.name for d in on_node2] == ["b"]
    by_machine = DataList(StorageRouter, {"type": DataList.where_operator.AND,
                                          "items": [("machine_id", DataList.operator.EQUALS, "m-2")]})
    assert by_machine.guids == [other.guid]
