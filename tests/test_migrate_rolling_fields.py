"""Rolling deploys and ``dal migrate``: a field some documents lack is filled, whoever recorded the model.

The newer model's first save into an empty hybrid records its model, which stores ``size`` and
``owner_guid``; a process still on the older model then creates objects without them. That save
marks them ``lacking`` in the record (dal/objects/schema.py, ``ensure_recorded``), so ``dal migrate``
writes their defaults instead of saying it is up to date, and a later change of the default alone
changes no object's value (docs/migrations.md). Each test fails on the code before this fix.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dal import DataList, DataObject, Property, Relation
from dal.config import Context
from dal.objects import schema
from dal.tools.migrate.migrator import migrate


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
    migrate(context, [owner, new])  # fills by-old-1, records model 2 with nothing lacking
    assert stored(context)["by-old-1"]["size"] == 0
    schema._states_of(context)[old._meta] = view  # migrate ran elsewhere: this process did not forget
    old(data={"name": "by-old-2"}).save()  # planned from the view before migrate's record
    record = schema.read_record(context, "rfpart")
    assert record is not None and record.model.get("lacking") == ["owner_guid", "size"]
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
