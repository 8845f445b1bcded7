"""``dal migrate`` and a new mandatory property or relation without a default: its objects are reported."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dal import DataObject, Property, Relation
from dal.backends.base import Put
from dal.config import Context
from dal.objects import schema
from dal.objects.transaction import encode
from dal.tools.migrate.migrator import Migrator, migrate
from dal.tools.migrate.survey import Survey
from dal.tools.migrate.verify import KeyVerifier


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def declare(version: int) -> tuple[Any, Any]:
    """Version 1: Disk(name); version 2: Disk gains a mandatory owner (no default) and a mandatory pool."""
    class VlPool(DataObject, hybrid_name="mvlpool"):
        __properties: list[Property[Any]] = [Property("name", str)]

    if version == 1:
        class VlDisk(DataObject, hybrid_name="mvldisk"):
            __properties: list[Property[Any]] = [Property("name", str)]
    else:
        class VlDisk(DataObject, hybrid_name="mvldisk"):  # type: ignore[no-redef]
            __properties: list[Property[Any]] = [Property("name", str), Property("owner", str)]
            __relations = [Relation("pool", VlPool, "disks")]

    return VlDisk, VlPool


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_new_mandatory_field_without_a_default_is_reported_until_each_object_has_a_value(
        context: Context, dry_run: bool) -> None:
    old, _ = declare(1)
    disk = old(data={"name": "a"})
    disk.save()
    model, pool_cls = declare(2)
    report = migrate(context, [model, pool_cls], dry_run=dry_run)
    assert not report.ok
    assert sorted((v.kind, v.field, v.guids) for v in report.violations) == [
        ("mandatory", "owner", (disk.guid,)), ("mandatory", "pool", (disk.guid,))]
    assert "VlDisk.owner is mandatory and has no default, but 1 object holds none" in "\n".join(report.lines)
    if dry_run:
        return
    again = migrate(context, [model, pool_cls])  # not up to date while they hold no value
    assert [v.field for v in again.violations] == ["owner", "pool"]
    pool = pool_cls(data={"name": "p"})
    pool.save()
    fixed = model(disk.guid)
    fixed.owner, fixed.pool = "me", pool
    fixed.save()
    assert migrate(context, [model, pool_cls]).ok
    assert migrate(context, [model, pool_cls]).up_to_date


def test_a_run_leaving_a_field_lacking_again_writes_no_record_and_no_marker(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """While objects hold no value of a mandatory field, each run reports them again: it rewrote the same
    record (dropping every process's cached plans) and stored, waited out and checked a marker for it."""
    old, _ = declare(1)
    old(data={"name": "a"}).save()
    model, pool_cls = declare(2)
    assert not migrate(context, [model, pool_cls]).ok
    markers: list[str] = []
    put_marker = KeyVerifier._put_marker
    monkeypatch.setattr(KeyVerifier, "_put_marker", lambda self, hybrid, fields, after: (
        markers.append(hybrid), put_marker(self, hybrid, fields, after))[1])
    before = schema.read_record(context, "mvldisk")
    again = migrate(context, [model, pool_cls])
    assert [v.field for v in again.violations] == ["owner", "pool"]
    after = schema.read_record(context, "mvldisk")
    assert before is not None and after is not None and after.revision == before.revision
    assert after.model.get("lacking") == ["owner", "pool_guid"] and markers == []


def declare_onetoone(version: int) -> tuple[Any, Any]:
    """Version 1: OtDisk.pool optional; version 2: mandatory (no default) and one-to-one."""
    class OtPool(DataObject, hybrid_name="mvlotpool"):
        __properties: list[Property[Any]] = [Property("name", str)]

    class OtDisk(DataObject, hybrid_name="mvlotdisk"):
        __properties: list[Property[Any]] = [Property("name", str)]
        __relations = [Relation("pool", OtPool, "disks", mandatory=False) if version == 1
                       else Relation("pool", OtPool, "disk", onetoone=True)]

    return OtDisk, OtPool


def test_a_one_to_one_relation_some_object_holds_no_value_of_is_checked_after_the_run(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its keys are built and marked ready, so they must be checked against older saves after the run: the
    marker left the relation out (as a violated one), and a save by an older model meanwhile, pointing a
    second object at one pool, left the relation ready with two objects on one pool."""
    old_disk, old_pool = declare_onetoone(1)
    p1 = old_pool(data={"name": "p1"})
    p1.save()
    old_disk(data={"name": "d1", "pool": p1}).save()
    old_disk(data={"name": "d2", "pool": None}).save()
    disk, pool = declare_onetoone(2)
    drop_relations = Migrator._drop_relations

    def older_save(self: Migrator, survey: Survey) -> None:  # after the keys are built: a v1 save
        if survey.meta.name == "mvlotdisk":
            guid, keys = str(uuid.uuid4()), context.keys
            context.persistent.commit([], [
                Put(keys.doc("mvlotdisk", guid), encode({"name": "d3", "pool_guid": p1.guid})),
                Put(keys.link("mvlotpool", p1.guid, "mvlotdisk", "pool", guid), b"")])
        drop_relations(self, survey)

    monkeypatch.setattr(Migrator, "_drop_relations", older_save)
    report = migrate(context, [disk, pool])
    record = schema.read_record(context, "mvlotdisk")
    assert record is not None
    assert sorted({v.kind for v in report.violations}) == ["mandatory", "onetoone"]
    assert "pool" not in record.onetoone
