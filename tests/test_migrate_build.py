"""``dal migrate`` building keys: older processes saving meanwhile, dropped relations, dry-run counts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dal import DataList, DataObject, Property, Relation
from dal.backends.base import Put
from dal.config import Context, configure
from dal.objects import schema
from dal.tools.migrate.migrator import migrate

CHILD = """
import os, sys, time
sys.path.insert(0, {tests!r})
from dal import configure
from dal.objects import schema
import test_migrate_build as models
schema.READY_TTL = {ttl!r}
configure({url!r}, "memory://", namespace={namespace!r})
Old = models.box(1)
box = Old({guid!r}); box.name = "touched"; box.save()   # reads the schema record now
print("read", flush=True)
while not os.path.exists({go!r}):
    time.sleep(0.01)
box = Old({guid!r}); box.code = "changed"; box.save()    # still trusting that record
print("saved", flush=True)
"""


def box(version: int, name: str = "bbox") -> Any:
    """Version 1 of a hybrid, then version 2 in which ``code`` became indexed."""
    if version == 1:
        class Box(DataObject, hybrid_name=name):
            __properties = [Property("name", str, indexed=True), Property("code", str, mandatory=False)]
    else:
        class Box(DataObject, hybrid_name=name):  # type: ignore[no-redef]
            __properties = [Property("name", str, indexed=True),
                            Property("code", str, mandatory=False, indexed=True)]
    return Box


def code_keys(context: Context, hybrid: str) -> list[str]:
    prefix = f"{context.keys.index_fields(hybrid)}code/"
    return sorted(key[len(prefix):] for key, _ in context.persistent.scan(prefix))


def query(cls: Any, value: str) -> list[str]:
    return sorted(DataList(cls, {"items": [("code", "EQUALS", value)]}).guids)


def test_a_save_by_an_older_process_inside_the_window_is_repaired(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ttl = 1.0
    monkeypatch.setattr(schema, "READY_TTL", ttl)
    url = f"sqlite:///{tmp_path}/s.db"
    context = configure(url, "memory://", namespace="window")
    old = box(1)
    boxes = [old(data={"name": f"n{i}", "code": f"c{i}"}) for i in range(3)]
    for each in boxes:
        each.save()
    go = tmp_path / "go"
    script = CHILD.format(tests=str(Path(__file__).parent), ttl=ttl, url=url, namespace="window",
                          guid=boxes[0].guid, go=str(go))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "read"
    real_write = schema.write_record
    said: list[str] = []

    def write_then_old_save(ctx: Context, record: schema.SchemaRecord) -> Any:
        outcome = real_write(ctx, record)
        if "code" in record.indexed and not said:  # marked ready: the old process saves right now
            go.touch()
            assert child.stdout is not None
            said.append(child.stdout.readline().strip())
        return outcome

    monkeypatch.setattr(schema, "write_record", write_then_old_save)
    new = box(2)
    report = migrate(context, [new])
    assert child.wait(timeout=30) == 0 and said == ["saved"]
    assert report.ok
    assert any("keys repaired" in line for line in report.lines), report.lines
    record = schema.read_record(context, "bbox")
    assert record is not None and "code" in record.indexed
    schema.forget(context)
    assert query(new, "changed") == [boxes[0].guid]  # the index is trusted, and right
    assert query(new, "c0") == []
    assert len(code_keys(context, "bbox")) == 3
    assert list(context.persistent.scan(f"{context.keys.root}m/verify/bbox")) == []  # every run's marker
    assert migrate(context, [new]).up_to_date


def test_a_run_stopped_before_its_check_leaves_it_to_the_next(context: Context,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "READY_TTL", 0.05)
    old = box(1, "sbox")
    first = old(data={"name": "a", "code": "c0"})
    first.save()
    new = box(2, "sbox")
    assert migrate(context, [new]).ok
    marker = f"{context.keys.root}m/verify/sbox"
    # as a killed run leaves it: keys marked ready, then an old save, and the marker not yet checked
    doc_key = context.keys.doc("sbox", first.guid)
    entry = context.persistent.get(doc_key)
    assert entry is not None
    doc = {**json.loads(entry.value), "code": "changed"}  # as an old save writes it: no code keys
    context.persistent.commit([], [Put(marker, json.dumps({"indexed": ["code"]}).encode())])
    context.persistent.commit([], [Put(doc_key, json.dumps(doc).encode())])
    dry = migrate(context, [new], dry_run=True)
    assert any("would check keys of code" in line for line in dry.lines), dry.lines
    report = migrate(context, [new])
    assert not report.up_to_date
    assert any("keys repaired" in line for line in report.lines), report.lines
    schema.forget(context)
    assert query(new, "changed") == [first.guid] and query(new, "c0") == []
    assert context.persistent.get(marker) is None


def declare_volumes(with_relation: bool) -> tuple[Any, Any]:
    class Owner(DataObject, hybrid_name="bowner"):
        __properties = [Property("name", str)]

    if with_relation:
        class Vol(DataObject, hybrid_name="bvol"):
            __properties = [Property("name", str)]
            __relations = [Relation("owner", Owner, "vols", mandatory=False)]
    else:
        class Vol(DataObject, hybrid_name="bvol"):  # type: ignore[no-redef]
            __properties = [Property("name", str)]
    return Owner, Vol


def test_links_of_a_relation_dropped_before_any_record_are_deleted(context: Context) -> None:
    owner_cls, vol_cls = declare_volumes(True)
    owner = owner_cls(data={"name": "o"})
    owner.save()
    vol_cls(data={"name": "v", "owner": owner}).save()
    assert schema.read_record(context, "bvol") is None  # nothing indexed: saves write no record
    owner_cls, vol_cls = declare_volumes(False)
    dry = migrate(context, [owner_cls, vol_cls], dry_run=True)
    assert "bvol: 1 object; would remove 1 link of dropped relation owner" in dry.lines
    migrate(context, [owner_cls, vol_cls])
    assert context.persistent.scan(f"{context.keys.root}l/") == []
    owner_cls(owner.guid).delete()  # no leftover link blocks it
    assert migrate(context, [owner_cls, vol_cls]).up_to_date


def declare_nics(onetoone: bool) -> tuple[Any, Any, Any]:
    class Host(DataObject, hybrid_name="bhost"):
        __properties = [Property("name", str)]

    class Nic(DataObject, hybrid_name="bnic"):
        __properties = [Property("name", str)]
        __relations = [Relation("host", Host, "nics", mandatory=False, onetoone=onetoone)]

    class FastNic(Nic, hybrid_name="bfastnic"):
        __properties = [Property("speed", int, default=1)]

    return Host, Nic, FastNic


def host_with_two_nics(*, subclass: bool) -> Any:
    """Store a host and two nics pointing at it (the second a FastNic when ``subclass``), under the
    model where the relation is not one-to-one yet; return the host."""
    host_cls, nic_cls, fast_cls = declare_nics(False)
    host = host_cls(data={"name": "h"})
    host.save()
    nic_cls(data={"name": "a", "host": host}).save()
    (fast_cls if subclass else nic_cls)(data={"name": "b", "host": host}).save()
    return host


def test_a_dry_run_sees_a_one_to_one_target_shared_across_subclass_hybrids(context: Context) -> None:
    host = host_with_two_nics(subclass=True)
    hybrids = list(declare_nics(True))
    dry = migrate(context, hybrids, dry_run=True)
    real = migrate(context, hybrids)
    assert not dry.ok and not real.ok
    assert len(dry.violations) == len(real.violations) == 1
    assert dry.violations[0].value == real.violations[0].value == host.guid
    assert sum(dry.objects.values()) == sum(real.objects.values()) == 0


def test_the_dry_run_counts_only_objects_the_run_writes(context: Context) -> None:
    old = box(1, "cbox")
    for i in range(4):
        old(data={"name": f"n{i}", "code": f"c{i}"}).save()
    new = box(2, "cbox")
    for i in range(6):  # the new model, deployed first, writes the code keys of what it saves
        new(data={"name": f"m{i}", "code": f"d{i}"}).save()
    dry = migrate(context, [new], dry_run=True)
    real = migrate(context, [new])
    assert dry.objects["cbox"] == real.objects["cbox"] == 4
    assert dry.lines[-1] == "dry run: 4 objects would change"


def test_a_run_building_nothing_but_violations_leaves_no_marker_and_does_not_wait(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A violated one-to-one relation is not built: nothing is marked for a check, so no later run
    reports a stopped one and waits for it."""
    monkeypatch.setattr(schema, "READY_TTL", 20.0)  # a wait (25 s) stands out from a slow machine's run
    host_with_two_nics(subclass=False)
    hybrids = list(declare_nics(True))
    for _ in range(2):
        started = time.monotonic()
        report = migrate(context, hybrids)
        assert not report.ok and len(report.violations) == 1
        assert time.monotonic() - started < schema.READY_TTL
        assert list(context.persistent.scan(f"{context.keys.root}m/verify/")) == []
