"""``dal migrate`` and a new mandatory property or relation without a default: its objects are reported."""

from __future__ import annotations

from typing import Any

import pytest

from dal import DataObject, Property, Relation
from dal.config import Context
from dal.objects import schema
from dal.tools.migrate.migrator import migrate


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
