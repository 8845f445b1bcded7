"""Links of a dropped relation whose source object a newer model deleted: ``dal migrate`` and ``dal check``.

A process running the new model deletes an object whose document still holds the dropped
relation's ``<relation>_guid``: its delete unlinks only declared relations, so the link key stays
with no document naming it. It would block deleting its target forever.
"""

from __future__ import annotations

from typing import Any

import pytest

from dal import DataObject, Property, Relation
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import InvalidValueError, LinkedObjectError
from dal.objects import schema
from dal.tools.check.integrity import check
from dal.tools.check.problems import Kind
from dal.tools.migrate.migrations import Migration
from dal.tools.migrate.migrator import migrate


def declare(with_relation: bool, *, indexed: bool = False, relation: str = "parent") -> tuple[Any, Any]:
    """The parent and child hybrids; the child's relation to its parent (``relation``) only
    ``with_relation``.

    ``indexed`` gives the child an indexed property, so that its saves write a schema record.
    """
    class Parent(DataObject, hybrid_name="dlparent"):
        __properties = [Property("name", str)]

    class Child(DataObject, hybrid_name="dlchild"):
        __properties = [Property("name", str, indexed=indexed)]
        __relations = [Relation(relation, Parent, "children", mandatory=False)] if with_relation else []
    return Parent, Child


def linked(*, indexed: bool = False) -> tuple[Any, Any]:
    """Store a parent and a child linked to it with the old model (the relation declared); return them."""
    parent_cls, child_cls = declare(True, indexed=indexed)
    parent = parent_cls(data={"name": "p"})
    parent.save()
    child = child_cls(data={"name": "c", "parent": parent})
    child.save()
    return parent, child


def orphaned_link(context: Context, *, indexed: bool = False) -> tuple[Any, Any, str, str]:
    """Link a child to its parent with the old model, then delete the child with the new one.

    Return the new model's classes, the parent's guid and the link key left behind.
    """
    parent, child = linked(indexed=indexed)
    link = context.keys.link("dlparent", parent.guid, "dlchild", "parent", child.guid)
    parent_cls, child_cls = declare(False, indexed=indexed)
    child_cls(child.guid).delete()
    assert context.persistent.get(link) is not None  # the delete did not know the relation
    with pytest.raises(LinkedObjectError):
        parent_cls(parent.guid).delete()
    return parent_cls, child_cls, parent.guid, link


def scanned_prefixes(context: Context, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the prefix of every scan of the durable store from now on."""
    scanned: list[str] = []
    real_scan = context.persistent.scan

    def scan(prefix: str, *args: Any, **kwargs: Any) -> Any:
        scanned.append(prefix)
        return real_scan(prefix, *args, **kwargs)

    monkeypatch.setattr(context.persistent, "scan", scan)
    return scanned


def test_a_child_without_keys_has_no_schema_record(context: Context) -> None:
    orphaned_link(context)
    assert schema.read_record(context, "dlchild") is None  # so the record cannot name the relation


def test_migrate_deletes_the_link_of_a_deleted_source(context: Context) -> None:
    parent_cls, child_cls, parent_guid, link = orphaned_link(context)
    dry = migrate(context, [parent_cls, child_cls], dry_run=True)
    assert not dry.up_to_date
    assert "dlchild: 0 objects; would remove 1 link of dropped relation parent" in dry.lines
    assert context.persistent.get(link) is not None
    report = migrate(context, [parent_cls, child_cls])
    assert not report.up_to_date
    assert "dlchild: 0 objects; remove 1 link of dropped relation parent" in report.lines
    assert context.persistent.get(link) is None
    assert check(context).clean
    parent_cls(parent_guid).delete()  # nothing blocks it any more
    assert migrate(context, [parent_cls, child_cls]).up_to_date


def test_migrate_deletes_it_when_the_record_predates_the_relation_drop(context: Context) -> None:
    """The child's record (written by its saves: it has an indexed property) names the relation."""
    parent_cls, child_cls, parent_guid, link = orphaned_link(context, indexed=True)
    assert schema.read_record(context, "dlchild") is not None
    migrate(context, [parent_cls, child_cls])
    assert context.persistent.get(link) is None
    parent_cls(parent_guid).delete()


def test_links_of_declared_relations_and_other_hybrids_stay(context: Context) -> None:
    parent, kept = linked()
    parent_cls, child_cls = type(parent), type(kept)
    # a link another hybrid holds, whose relation the model does not declare either: not this run's
    foreign = context.keys.link("dlparent", parent.guid, "dlother", "parent", kept.guid)
    context.commit([], [Put(foreign, b"")])
    assert migrate(context, [parent_cls, child_cls]).ok
    keep = context.keys.link("dlparent", parent.guid, "dlchild", "parent", kept.guid)
    assert context.persistent.get(keep) is not None and context.persistent.get(foreign) is not None


def test_an_up_to_date_store_scans_no_links(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    parent_cls, child_cls, _, _ = orphaned_link(context)
    migrate(context, [parent_cls, child_cls])
    scanned = scanned_prefixes(context, monkeypatch)
    assert migrate(context, [parent_cls, child_cls]).up_to_date
    assert not any(prefix.startswith(f"{context.keys.root}l/") for prefix in scanned), scanned


def test_a_model_change_that_drops_no_relation_scans_no_links(context: Context,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading every link is for a hybrid with no record (none listed its relations); once recorded,
    only the targets of the relations its record lists and the model dropped are read."""
    parent_cls, child_cls, _, _ = orphaned_link(context)
    migrate(context, [parent_cls, child_cls])
    parent_cls, child_cls = declare(False, indexed=True)  # the model changed: an index to build
    scanned = scanned_prefixes(context, monkeypatch)
    assert migrate(context, [parent_cls, child_cls]).ok
    assert not any(prefix.startswith(f"{context.keys.root}l/") for prefix in scanned), scanned


def test_a_pending_rename_keeps_the_links_it_moves(context: Context) -> None:
    """A dry run sees the relation renamed by a pending step: its links are not dropped."""
    linked()

    parent_cls, child_cls = declare(True, relation="mother")
    step = Migration(1, "rename parent to mother", lambda s: s.rename_relation(child_cls, "parent", "mother"))
    dry = migrate(context, [parent_cls, child_cls], migrations=[step], dry_run=True)
    assert not any("dropped relation" in line for line in dry.lines), dry.lines


def test_check_repair_deletes_the_link_of_a_deleted_source(context: Context) -> None:
    parent_cls, _, parent_guid, link = orphaned_link(context)
    report = check(context)
    assert [problem.key for problem in report.of(Kind.STALE_LINK)] == [link]
    assert report.of(Kind.ORPHAN_KEY) == []
    repaired = check(context, repair=True)
    assert [problem.key for problem in repaired.fixed] == [link]
    assert context.persistent.get(link) is None
    parent_cls(parent_guid).delete()


def test_check_leaves_the_link_of_a_stored_source_to_a_person(context: Context) -> None:
    """Its document still names the target: only a model change (``dal migrate``) says it is dropped."""
    linked()
    declare(False)
    report = check(context, repair=True)
    assert len(report.of(Kind.ORPHAN_KEY)) == 1 and report.fixed == []


def test_migrate_names_what_to_pass_instead_of_strings(context: Context) -> None:
    with pytest.raises(InvalidValueError, match="DataObject subclasses"):
        migrate(context, ["dlchild"])  # type: ignore[list-item]
