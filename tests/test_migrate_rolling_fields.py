"""Rolling deploys and ``dal migrate``: a field some documents lack is filled, whoever recorded the model.

The newer model's first save into an empty hybrid records its model, which stores ``size`` and
``owner_guid``; a process still on the older model then creates objects without them. That save
marks them ``lacking`` in the record (dal/objects/schema.py, ``ensure_recorded``), so ``dal migrate``
writes their defaults instead of saying it is up to date, and a later change of the default alone
changes no object's value (docs/migrations.md). Each test fails on the code before this fix.

An older process's create committed while ``dal migrate`` runs, after its pass over the documents
and before it records the model as held by every document, checks a record the run has not yet
changed: the run's check after it (dal/tools/migrate/verify.py) fills that object, as it repairs
the keys of what older processes saved while keys were built (the last three tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dal import DataList, DataObject, Property, Relation
from dal.config import Context
from dal.objects import schema
from dal.tools.migrate.keys import HybridMigrator
from dal.tools.migrate.migrator import Migrator, migrate


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # a run that fills fields waits this long (x 1.25) before its check of what older processes saved
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def declare(version: int) -> tuple[Any, Any]:
    """Return (owner, part) of ``version``: 1 has only ``name``; 2 adds ``size`` (default 0) and the
    relation ``owner``; 3 is 2 with ``size`` defaulting to 5. One class statement each, so a newer
    version replaces an older one in the registry, as a redeployed process sees it."""

    class RfOwner(DataObject, hybrid_name="rfowner"):
        __properties: list[Property[Any]] = [Property("name", str)]

    if version == 1:
        class RfPart(DataObject, hybrid_name="rfpart"):
            __properties: list[Property[Any]] = [Property("name", str, indexed=True)]
    else:
        class RfPart(DataObject, hybrid_name="rfpart"):  # type: ignore[no-redef]
            __properties: list[Property[Any]] = [
                Property("name", str, indexed=True), Property("size", int, default=0 if version == 2 else 5)]
            __relations = [Relation("owner", RfOwner, "parts", mandatory=False)]
    return RfOwner, RfPart


def stored(context: Context) -> dict[str, dict[str, Any]]:
    """Return the stored part documents by name."""
    docs = [json.loads(entry.value) for _, entry in context.persistent.scan(context.keys.docs("rfpart"))]
    return {doc["name"]: doc for doc in docs}


def test_migrate_fills_a_field_an_older_model_left_out_after_the_newer_model_recorded_it(
        context: Context) -> None:
    _, old = declare(1)
    owner, new = declare(2)  # both run: the newer one redeployed, the older one not yet
    new(data={"name": "by-new"}).save()  # the first save into the empty hybrid records model 2
    assert schema.read_record(context, "rfpart").model.get("lacking") is None  # type: ignore[union-attr]
    old(data={"name": "by-old"}).save()  # a process still on model 1
    record = schema.read_record(context, "rfpart")
    assert record is not None and record.model.get("lacking") == ["owner_guid", "size"]
    assert "size" in record.model["properties"], "the default stays, for the older model's creates to name"
    assert stored(context)["by-old"] == {"name": "by-old"}

    report = migrate(context, [owner, new])  # every process now runs model 2
    assert "up to date: nothing to do" not in report.lines
    assert stored(context)["by-old"] == {"name": "by-old", "size": 0, "owner_guid": None}
    record = schema.read_record(context, "rfpart")
    assert record is not None and record.model == schema.describe(new._meta), "no field is lacking now"
    assert migrate(context, [owner, new]).lines == ["up to date: nothing to do"]

    owner, latest = declare(3)  # only the default of size changes: no object changes value
    migrate(context, [owner, latest])
    assert sorted((part.name, part.size) for part in DataList(latest)) == [("by-new", 0), ("by-old", 0)]


def test_a_create_planned_before_migrate_recorded_the_model_marks_the_field_again(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older process whose view of the record predates ``dal migrate``'s record write: its create's
    commit checks the record it ensured, fails, reads it again and marks the field again."""
    monkeypatch.setattr(schema, "READY_TTL", 3600.0)  # the older process keeps its view
    _, old = declare(1)
    owner, new = declare(2)
    new(data={"name": "by-new"}).save()
    old(data={"name": "by-old-1"}).save()  # marks size lacking; its view is that record
    view = schema.current_state(context, old._meta)
    with monkeypatch.context() as short:  # the run's check after it waits READY_TTL, not an hour
        short.setattr(schema, "READY_TTL", 0.05)
        migrate(context, [owner, new])  # fills by-old-1, records model 2 with nothing lacking
    assert stored(context)["by-old-1"]["size"] == 0
    schema._states_of(context)[old._meta] = view  # migrate ran elsewhere: this process did not forget
    old(data={"name": "by-old-2"}).save()  # planned from the view before migrate's record
    record = schema.read_record(context, "rfpart")
    assert record is not None and record.model.get("lacking") == ["owner_guid", "size"]
    monkeypatch.setattr(schema, "READY_TTL", 0.05)
    migrate(context, [owner, new])
    assert stored(context)["by-old-2"] == {"name": "by-old-2", "size": 0, "owner_guid": None}


def test_a_newer_models_cached_result_on_the_default_lists_an_older_models_create_after_the_mark(
        context: Context) -> None:
    """The mark changes no cached result's dependencies: the record's model keeps the field's default,
    and a create that leaves the field out still names its versions at that default (views.py). So the
    older model's create reaches the newer model's result, which is then served again, and a create
    of another value keeps it, as before the mark."""
    _, old = declare(1)
    _, new = declare(2)
    first = new(data={"name": "by-new"})
    first.save()

    def ask() -> tuple[list[str], str]:
        found = DataList(new, {"type": "AND", "items": [("size", "EQUALS", 0)]})
        return sorted(found.guids), found._cache

    assert ask() == ([first.guid], "miss") and ask() == ([first.guid], "hit")
    made = old(data={"name": "by-old"})
    made.save()  # marks size lacking
    record = schema.read_record(context, "rfpart")
    assert record is not None and record.model.get("lacking") == ["owner_guid", "size"]
    both = sorted([first.guid, made.guid])
    assert ask() == (both, "miss") and ask() == (both, "hit")
    new(data={"name": "big", "size": 7}).save()
    assert ask() == (both, "hit")
    schema.forget(context)  # the newer model reads the mark: the same dependencies
    assert ask() == (both, "hit")


@contextmanager
def create_before_the_record_write(old: Any, name: str) -> Iterator[None]:
    """Make the older model create ``name`` once, as another process would, when ``dal migrate`` has
    passed over the documents and is about to record the model: the record is still the one the
    older process's view holds, so its commit's check of it passes. (Not through ``monkeypatch``,
    whose ``undo()`` would also undo ``short_ttl``.)"""
    record = HybridMigrator._record

    def late_create(self: HybridMigrator, survey: Any, *args: Any, **kwargs: Any) -> None:
        if survey.meta.name == "rfpart" and name not in stored(self.context):
            old(data={"name": name}).save()
        record(self, survey, *args, **kwargs)

    HybridMigrator._record = late_create  # type: ignore[method-assign]
    try:
        yield
    finally:
        HybridMigrator._record = record  # type: ignore[method-assign]


def test_an_older_models_create_during_a_migrate_filling_fields_is_filled_by_its_check(
        context: Context) -> None:
    _, old = declare(1)
    owner, new = declare(2)
    new(data={"name": "by-new"}).save()
    old(data={"name": "by-old-1"}).save()  # marks size lacking
    with create_before_the_record_write(old, "by-old-2"):
        report = migrate(context, [owner, new])  # fills by-old-1; by-old-2 is created behind its pass
    assert stored(context)["by-old-2"] == {"name": "by-old-2", "size": 0, "owner_guid": None}
    assert any("1 object saved meanwhile by a process running an older model: fields and keys repaired"
               in line for line in report.lines), report.lines
    assert migrate(context, [owner, new]).lines == ["up to date: nothing to do"]
    owner, latest = declare(3)  # only the default of size changes: no object changes value
    migrate(context, [owner, latest])
    assert sorted((part.name, part.size) for part in DataList(latest)) == [
        ("by-new", 0), ("by-old-1", 0), ("by-old-2", 0)]


def test_an_older_models_create_while_migrate_only_records_the_filled_model_is_filled(
        context: Context) -> None:
    """The record marks ``size`` lacking but no stored document lacks it any more (the one that did was
    deleted): the run writes only the record, and checks every document after it."""
    _, old = declare(1)
    owner, new = declare(2)
    new(data={"name": "by-new"}).save()
    gone = old(data={"name": "by-old-1"})
    gone.save()  # marks size lacking
    gone.delete()
    with create_before_the_record_write(old, "by-old-2"):
        migrate(context, [owner, new])
    assert stored(context)["by-old-2"] == {"name": "by-old-2", "size": 0, "owner_guid": None}
    assert migrate(context, [owner, new]).lines == ["up to date: nothing to do"]


def test_a_migrate_stopped_before_its_check_leaves_the_fill_to_the_next_run(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after recording the model, before its check: its marker names the filled fields,
    so the next run, with nothing else to do, checks what was saved since and fills it."""
    _, old = declare(1)
    owner, new = declare(2)
    new(data={"name": "by-new"}).save()
    old(data={"name": "by-old-1"}).save()
    with create_before_the_record_write(old, "by-old-2"), monkeypatch.context() as killed:
        killed.setattr(Migrator, "_verify_marked", lambda self: None)  # killed before its check
        migrate(context, [owner, new])
    assert "size" not in stored(context)["by-old-2"]
    report = migrate(context, [owner, new])
    assert any("check keys of owner_guid, size" in line for line in report.lines), report.lines
    assert stored(context)["by-old-2"] == {"name": "by-old-2", "size": 0, "owner_guid": None}
    assert migrate(context, [owner, new]).lines == ["up to date: nothing to do"]


@pytest.mark.parametrize("stored_before", [(), ("by-new",)])
def test_an_older_models_create_during_a_migrate_of_a_record_it_wrote_is_filled(
        context: Context, stored_before: tuple[str, ...]) -> None:
    """The record is the older model's (its first save into the empty hybrid; that object since
    deleted), so it lists no ``size`` and the older model's creates mark nothing: no document lacks
    the field when the run scans, yet one created during the run does (found by a review)."""
    _, old = declare(1)
    owner, new = declare(2)
    gone = old(data={"name": "by-old-1"})
    gone.save()
    gone.delete()
    for name in stored_before:
        new(data={"name": name}).save()
    with create_before_the_record_write(old, "by-old-2"):
        migrate(context, [owner, new])
    assert stored(context)["by-old-2"] == {"name": "by-old-2", "size": 0, "owner_guid": None}
    assert migrate(context, [owner, new]).lines == ["up to date: nothing to do"]
