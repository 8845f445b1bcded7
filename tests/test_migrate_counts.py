"""``dal migrate``: keys left in a hybrid with no document, dry-run counts, the arguments it takes."""

from __future__ import annotations

from typing import Any

import pytest

from dal import DataList, DataObject, Property, Relation
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.objects import schema
from dal.objects.transaction import Document
from dal.tools.check.integrity import check
from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import Migration, migrate


def part(keyed: bool) -> Any:
    """A hybrid whose ``color`` is indexed and ``serial`` unique (``keyed``), or neither."""
    class Part(DataObject, hybrid_name="cpart"):
        __properties = [Property("serial", str, unique=keyed, mandatory=False),
                        Property("color", str, indexed=keyed, default="red")]
    return Part


def badges(onetoone: bool) -> tuple[Any, Any]:
    class Person(DataObject, hybrid_name="cperson"):
        __properties = [Property("name", str)]

    class Badge(DataObject, hybrid_name="cbadge"):
        __properties = [Property("name", str)]
        __relations = [Relation("holder", Person, "badges", mandatory=False, onetoone=onetoone)]
    return Person, Badge


def keys_of(context: Context, *hybrids: str) -> list[str]:
    root = context.keys.root
    return sorted(key for hybrid in hybrids for kind in "iur"
                  for key, _ in context.persistent.scan(f"{root}{kind}/{hybrid}/"))


def test_keys_left_in_a_hybrid_with_no_document_are_removed_before_it_is_marked_ready(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that stopped keying a field deleted every object: their keys stay. The next migrate of
    the model keying it again, finding no document, removes them before marking the keys ready."""
    monkeypatch.setattr(schema, "READY_TTL", 0.05)
    v1 = part(True)
    gone = v1(data={"serial": "S1", "color": "blue"})
    gone.save()
    assert migrate(context, [v1]).ok
    v2 = part(False)
    other = v2(data={"serial": "S2"})
    other.save()  # the first save of v2 takes serial and color out of ready: it does not maintain them
    other.delete()
    v2(gone.guid).delete()  # nor does its delete: the keys of S1 and blue stay
    assert len(keys_of(context, "cpart")) == 2
    v3 = part(True)
    dry = migrate(context, [v3], dry_run=True)
    assert "cpart: 0 objects; would remove the keys of color, serial left by deleted objects; would build " \
           "index keys of color; would build unique keys of serial" in dry.lines, dry.lines
    assert len(keys_of(context, "cpart")) == 2
    report = migrate(context, [v3])
    assert not report.up_to_date and report.lines[-1] == "migrated: 0 steps run, 0 objects changed"
    assert keys_of(context, "cpart") == []
    record = schema.read_record(context, "cpart")
    assert record is not None and record.indexed == {"color"} and record.unique == {"serial"}
    schema.forget(context)
    v3(data={"serial": "S1", "color": "red"}).save()  # no key left refuses it
    assert DataList(v3, {"items": [("color", "EQUALS", "blue")]}).guids == []
    assert check(context).problems == []
    assert migrate(context, [v3]).up_to_date


def test_one_to_one_keys_left_in_a_hybrid_with_no_document_are_removed(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "READY_TTL", 0.05)
    person_cls, badge_cls = badges(True)
    ann = person_cls(data={"name": "ann"})
    ann.save()
    first = badge_cls(data={"name": "b1", "holder": ann})
    first.save()
    assert migrate(context, [person_cls, badge_cls]).ok
    person_cls, badge_cls = badges(False)
    other = badge_cls(data={"name": "b2"})
    other.save()  # takes holder out of ready
    other.delete()
    badge_cls(first.guid).delete()  # its one-to-one key stays
    assert len(keys_of(context, "cbadge")) == 1
    person_cls, badge_cls = badges(True)
    report = migrate(context, [person_cls, badge_cls])
    assert "cbadge: 0 objects; remove the keys of holder left by deleted objects; build one-to-one keys of " \
           "holder" in report.lines, report.lines
    assert keys_of(context, "cbadge") == []
    schema.forget(context)
    badge_cls(data={"name": "b3", "holder": person_cls(ann.guid)}).save()  # ann's target is free
    assert check(context).problems == []


def item(version: int) -> Any:
    if version == 1:
        class Item(DataObject, hybrid_name="citem"):
            __properties = [Property("name", str), Property("flag", str, default="")]
    else:
        class Item(DataObject, hybrid_name="citem"):  # type: ignore[no-redef]
            __properties = [Property("name", str), Property("flag", str, default=""),
                            Property("extra", int, default=7)]
    return Item


def only(name: str) -> Migration:
    """A step flagging the item called ``name`` (one object), numbered by its letter."""
    def flag(doc: Document) -> Document | None:
        return {**doc, "flag": "x"} if doc.get("name") == name else None

    def describe(step: Step) -> None:
        step.transform("citem", flag)
    return Migration(ord(name) - ord("a") + 1, f"flag {name}", describe)


@pytest.mark.parametrize("case", ["two steps", "a step and the fill pass", "a step on a hybrid not named"])
def test_the_dry_run_counts_each_object_any_pass_writes_once_as_the_run_does(context: Context,
                                                                                 case: str) -> None:
    """Passes writing different objects: the count is of them all (the union), not of the busiest pass."""
    old = item(1)
    fill = case == "a step and the fill pass"
    for name in "ab" if fill else "abcd":
        old(data={"name": name}).save()
    steps, named = [only("a"), only("b")], [old]
    if fill:  # step 3 writes c, which lacks nothing; defaults go to a and b
        new = item(2)
        for name in "cd":
            new(data={"name": name}).save()  # saved by the new model: they have every field
        steps, named = [only("c")], [new]
    elif case == "a step on a hybrid not named":  # the run rewrites it all the same
        named = [part(True)]
    dry = migrate(context, named, migrations=steps, dry_run=True)
    report = migrate(context, named, migrations=steps)
    expected = {"a step and the fill pass": 3}.get(case, 2)
    assert dict(dry.objects) == dict(report.objects) == {"citem": expected}, (dry.lines, report.lines)
    assert dry.lines[-1].startswith(f"dry run: {expected} objects would change")
    if case == "a step on a hybrid not named":
        assert "citem: 4 objects; step 1 would change 1; step 2 would change 1 (not among the hybrids " \
               "migrated: its defaults and keys are left as they are)" in dry.lines, dry.lines


def test_a_hybrid_recorded_with_no_object_to_change_is_work_done(context: Context) -> None:
    """Its record written: the run is not up to date, and the summary says what it wrote."""
    cls = item(1)
    cls(data={"name": "a"}).save()  # nothing keyed: saves write no record
    dry = migrate(context, [cls], migrations=[], dry_run=True)
    assert dry.lines[-1] == ("dry run: 0 objects would change, 1 schema record would be written (no object "
                             "of those hybrids needed a change)")
    report = migrate(context, [cls], migrations=[])
    assert not report.up_to_date and report.commits == 1
    assert report.lines[-1] == ("migrated: 0 steps run, 0 objects changed, 1 schema record written (no "
                                "object of those hybrids needed a change)")
    again = migrate(context, [cls], migrations=[])
    assert again.up_to_date and again.commits == 0 and again.lines == ["up to date: nothing to do"]


def declared_step(step: Step) -> None:
    """What ``@migration`` returns: the function itself (registered, not wrapped)."""


@pytest.mark.parametrize("given", [[declared_step], declared_step, {1: declared_step}, 5, "step"],
                         ids=["a list of functions", "a function", "a dict", "an int", "a str"])
def test_migrations_takes_migration_objects_or_none(context: Context, given: Any) -> None:
    with pytest.raises(InvalidValueError, match=r"migrate\(\) got .*: pass Migration objects "
                                                r"\(Migration\(number, description, func\)\), or None"):
        migrate(context, [item(1)], migrations=given, dry_run=True)
