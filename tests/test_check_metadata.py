"""dal check beyond the derived keys: schema records dal cannot read, and the metadata areas
(``m/schema/``, ``m/cachequeue/``) holding keys of what the model does not declare; what the
messages of stale keys say they cost."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import dal
from dal import DataObject, Dynamic, Property, Relation
from dal.backends.base import Put
from dal.cli.check import render
from dal.config import Context
from dal.exceptions import LinkedObjectError
from dal.objects.schema import decode_record, read_record
from dal.tools.check.integrity import Kind, apply_fixes, check


class MetaRack(DataObject, hybrid_name="fcmetarack"):
    """Indexed and unique properties (so a schema record is written), and a dynamic to queue."""

    __properties: list[Property[Any]] = [Property("name", str, unique=True),
                                         Property("row", int, default=0, indexed=True)]
    __dynamics = [Dynamic("load", int, 10)]

    def _load(self) -> int:
        return self.row * 10


class MetaServer(DataObject, hybrid_name="fcmetaserver"):
    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("rack", MetaRack, "servers", mandatory=False)]


GHOST_GUID = "0e5c1f6a-9b1d-4f53-8a1b-2c3d4e5f6a7b"


def opened(tmp_path: Path) -> Context:
    """Configure dal on the test's store, as a process starting now would (nothing cached)."""
    return dal.configure(f"sqlite:///{tmp_path / 'meta.sqlite3'}", f"memory://{uuid.uuid4().hex[:8]}",
                         namespace="meta")


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return opened(tmp_path)


def put(context: Context, *pairs: tuple[str, bytes]) -> None:
    assert context.persistent.commit([], [Put(key, value) for key, value in pairs]).ok


def racks() -> tuple[MetaRack, MetaRack]:
    first, second = MetaRack(data={"name": "r1", "row": 3}), MetaRack(data={"name": "r2"})
    first.save()
    second.save()
    return first, second


@pytest.mark.parametrize("record", [
    b'{"fingerprint":"x","model":{},"ready":[]}', b'{"fingerprint":"x","model":{},"ready":null}',
    b'{"fingerprint":"x","model":{},"ready":"x"}', b'{"fingerprint":"x","model":{},"ready":1}',
    b'{"fingerprint":1,"model":{},"ready":{"indexed":[],"unique":[]}}',
    b'{"fingerprint":"x","model":{"properties":[]},"ready":{"indexed":[],"unique":[]}}',
    b'{"fingerprint":"x","model":{"relations":{"rack":1}},"ready":{"indexed":[],"unique":[]}}',
    b'{"fingerprint":"x","model":{},"ready":{"indexed":"row","unique":[]}}',
    b'{"fingerprint":"x","model":{},"ready":{"indexed":[],"unique":[],"onetoone":[1]}}',
    b"[]", b"garbage"])
def test_a_schema_record_of_the_wrong_shape_counts_as_nothing_ready_and_check_reports_it(
        context: Context, record: bytes, tmp_path: Path) -> None:
    """A record whose ``ready`` (or any other part) is not what dal writes once made every save and
    query of its hybrid, and ``dal check``, raise a raw AttributeError."""
    first, _ = racks()
    put(context, (context.keys.schema("fcmetarack"), record))
    decoded = read_record(context, "fcmetarack")
    assert decoded is not None and decoded.indexed == decoded.unique == decoded.onetoone == frozenset()
    assert decoded.model == {} and decoded.fingerprint == ""
    report = check(context)
    assert [problem.kind for problem in report.problems] == [Kind.INVALID_SCHEMA]
    assert "run `dal migrate`, which rewrites it" in report.problems[0].message
    shown = render(report, "here", 10)
    assert any("invalid_schema" in line and "needs `dal migrate`" in line for line in shown), shown
    opened(tmp_path)
    rack = MetaRack(first.guid)
    rack.row = 4
    rack.save()  # the hybrid still works, scanning instead of trusting its keys
    assert MetaRack.where(MetaRack.row == 4).guids == [first.guid]


def test_a_record_as_dal_writes_it_still_decodes_whole(context: Context) -> None:
    racks()
    entry = context.persistent.get(context.keys.schema("fcmetarack"))
    assert entry is not None
    record = decode_record("fcmetarack", entry.value, entry.revision)
    assert record.indexed == {"row"} and record.unique == {"name"} and len(record.fingerprint) == 64
    # a record written before one-to-one keys existed has no "onetoone": none is ready
    older = b'{"fingerprint":"x","model":{},"ready":{"indexed":["row"],"unique":[]}}'
    assert decode_record("fcmetarack", older, 1).indexed == {"row"}
    assert check(context).clean


def test_stale_keys_are_reported_with_what_they_really_cost(context: Context) -> None:
    """A stale index entry or link never shows a wrong object (candidates are re-checked against
    their documents); the messages once said queries and reverse lists would."""
    first, second = racks()
    server = MetaServer(data={"name": "s", "rack": first})
    server.save()
    put(context, (context.keys.index("fcmetarack", "row", 7, first.guid), b""),
        (context.keys.link("fcmetarack", second.guid, "fcmetaserver", "rack", server.guid), b""))
    report = check(context)
    assert sorted(problem.kind.value for problem in report.problems) == ["stale_index", "stale_link"]
    for problem in report.problems:
        assert "wrong object" not in problem.message
    assert "only costs them a wasted read" in report.of(Kind.STALE_INDEX)[0].message
    assert "blocks deleting its target" in report.of(Kind.STALE_LINK)[0].message
    assert MetaRack.where(MetaRack.row == 7).guids == []  # what the messages say, as reads see it
    assert MetaRack(second.guid).servers_guids == []
    with pytest.raises(LinkedObjectError):
        MetaRack(second.guid).delete()


def test_metadata_keys_of_what_the_model_does_not_declare_are_orphans_repaired_when_nothing_is_lost(
        context: Context) -> None:
    """``m/schema/`` and ``m/cachequeue/`` were never read: keys there of an undeclared hybrid or
    dynamic went unreported, though the docs said no key of an undeclared hybrid escapes."""
    first, _ = racks()
    keys = context.keys
    queue = f"{keys.root}m/cachequeue/"
    ghost_record = keys.schema("fcghost")
    ghost_queued = f"{queue}fcghost/{GHOST_GUID}/load"
    renamed = f"{queue}fcmetarack/{first.guid}/weight"  # the hybrid's, a dynamic it does not declare
    kept_record = keys.schema("fcother")  # of a hybrid with documents: maybe a model not passed
    kept_queued = f"{queue}fcother/{GHOST_GUID}/load"
    queued = f"{queue}fcmetarack/{first.guid}/load"  # declared: fine
    record = b'{"fingerprint":"x","model":{},"ready":{"indexed":[],"unique":[]}}'
    put(context, (ghost_record, record), (ghost_queued, b'{"n":0}'), (renamed, b'{"n":0}'),
        (kept_record, record), (kept_queued, b'{"n":0}'), (keys.doc("fcother", GHOST_GUID), b"{}"),
        (queued, b'{"n":0}'))
    report = check(context, repair=True)
    orphans = {problem.key: problem for problem in report.of(Kind.ORPHAN_KEY)}
    assert set(orphans) == {ghost_record, ghost_queued, renamed, kept_record, kept_queued,
                            keys.doc("fcother", GHOST_GUID)}
    # a dynamic the hybrid does not declare may be a newer model's (a rolling deploy): reported, kept
    assert {problem.key for problem in report.fixed} == {ghost_record, ghost_queued}
    assert "has stored documents: pass the module declaring it with --hybrids" in orphans[kept_record].message
    assert "a process of a newer model may declare it" in orphans[renamed].message
    left = {key for key, _ in context.persistent.scan(f"{keys.root}m/")}
    assert {ghost_record, ghost_queued}.isdisjoint(left)
    assert {kept_record, kept_queued, queued, renamed} <= left
    assert any("orphan_key" in line and "2 repairable" in line for line in render(report, "here", 10))
    again = check(context)
    assert {problem.key for problem in again.problems} == {kept_record, kept_queued, renamed,
                                                           keys.doc("fcother", GHOST_GUID)}


def test_removing_a_schema_record_drops_its_hybrids_schema_version(context: Context) -> None:
    """A record's removal is a record write: a process that planned a cached query from the record
    must plan again (every record write drops the version, ``dal.objects.schema.as_of``)."""
    racks()
    record, version = context.keys.schema("fcghost"), context.keys.schema_version("fcghost")
    put(context, (record, b'{"fingerprint":"x","model":{},"ready":{"indexed":["b"],"unique":[]}}'))
    assert context.volatile.set(version, b"a token a process planned under", 600)
    report = check(context, repair=True)
    assert record in {problem.key for problem in report.fixed}
    assert context.persistent.get(record) is None
    assert context.volatile.get(version) is None, "the schema version outlived the record's removal"


def test_a_repair_leaves_an_undeclared_hybrids_record_once_a_document_of_it_is_stored(
        context: Context) -> None:
    racks()
    record = context.keys.schema("fcghost")
    put(context, (record, b'{"fingerprint":"x","model":{},"ready":{"indexed":[],"unique":[]}}'))
    report = check(context)
    put(context, (context.keys.doc("fcghost", GHOST_GUID), b"{}"))  # written after the check read
    apply_fixes(context, report)
    assert [problem.key for problem in report.conflicted] == [record]
    assert context.persistent.get(record) is not None
