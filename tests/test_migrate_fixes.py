"""``dal migrate`` and the saves beside it: unique keys while a unique property is not ready, relations
declared again, the run's summary, and removing a field.

- While a property's unique keys are not built (two objects share a value, or no run since it became
  unique), the key of a value may be another holder's: a save or delete removes only its own.
  ``dal migrate`` gives the key of each shared value to one holder, so that the printed fix converges.
- A relation dropped (its links deleted by a run) and declared again gets its links back; an object
  pointing at a target that is not stored is reported.
- The summary does not say that objects a step changed needed no change.
- A removed property is dropped from the stored documents by a step; ``dal check`` says how.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from dal import DataObject, Property, Relation
from dal.config import Context
from dal.exceptions import LinkedObjectError, UniqueConstraintError
from dal.objects import schema
from dal.tools.check.integrity import check
from dal.tools.check.problems import Kind
from dal.tools.migrate.migrations import Migration, MigrationError
from dal.tools.migrate.migrator import migrate
from dal.tools.transfer.dump import dump, read_dump
from dal.tools.transfer.load import load


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # migrate waits this long before deleting keys processes may still trust
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


# --- unique keys while a unique property is not ready ------------------------------------------


def part(unique: bool) -> Any:
    class Part(DataObject, hybrid_name="fxpart"):
        __properties = [Property("serial", str, unique=unique, mandatory=False),
                        Property("note", str, default="")]
    return Part


def holders(context: Context, count: int, value: str = "X") -> tuple[Any, list[str]]:
    """Store ``count`` parts holding ``value`` before serial became unique; return the new model and
    their guids, sorted."""
    old = part(False)
    guids = []
    for _ in range(count):
        obj = old(data={"serial": value})
        obj.save()
        guids.append(obj.guid)
    return part(True), sorted(guids)


def key_owner(context: Context, value: str) -> str | None:
    entry = context.persistent.get(context.keys.unique("fxpart", "serial", value))
    return None if entry is None else entry.value.decode()


def test_a_holder_giving_up_a_value_leaves_the_key_another_holder_took(context: Context) -> None:
    """Before the first migrate since serial became unique: a new object takes X's key; the older
    holders changing or deleting leave it."""
    new, (a, b, d) = holders(context, 3)
    c = new(data={"serial": "X"})
    c.save()  # nothing keys X yet: taken
    assert key_owner(context, "X") == c.guid
    changed = new(b)
    changed.serial = "Y"
    changed.save()
    new(d).delete()
    assert key_owner(context, "X") == c.guid  # it still names the holder it was written for
    assert key_owner(context, "Y") == b
    with pytest.raises(UniqueConstraintError):
        new(data={"serial": "X"}).save()
    report = migrate(context, [new])  # A and C hold X: listed, and C keeps its key
    assert [(v.value, v.guids) for v in report.violations] == [("X", tuple(sorted((a, c.guid))))]
    assert any(f"{c.guid} holds its unique key" in line for line in report.lines), report.lines


def test_migrate_gives_a_shared_value_to_one_holder_and_the_fix_converges(context: Context) -> None:
    new, (a, b, d) = holders(context, 3)
    report = migrate(context, [new])
    assert not report.ok and [len(v.guids) for v in report.violations] == [3]
    assert key_owner(context, "X") == a  # the first by guid
    assert any(f"{a} holds its unique key, so no other object can take the value: change or delete the "
               "others" in line for line in report.lines), report.lines
    with pytest.raises(UniqueConstraintError):  # while the violation stands, no new holder
        new(data={"serial": "X"}).save()
    changed = new(b)
    changed.serial = "Y"
    changed.save()
    assert key_owner(context, "X") == a
    report = migrate(context, [new])
    assert [v.guids for v in report.violations] == [(a, d)]  # fewer holders
    new(d).delete()
    assert key_owner(context, "X") == a
    report = migrate(context, [new])
    assert report.ok, report.lines
    assert "serial" in schema.read_record(context, "fxpart").unique  # type: ignore[union-attr]
    assert not check(context).problems


def test_a_delete_of_the_holder_owning_the_key_frees_the_value(context: Context) -> None:
    new, (a, b) = holders(context, 2)
    migrate(context, [new])
    new(a).delete()
    assert key_owner(context, "X") is None  # its own key: removed with it
    migrate(context, [new])  # B alone holds X now: built
    assert key_owner(context, "X") == b


def reads_of(context: Context, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the keys of every get and get_many of the durable store from now on."""
    calls: list[list[str]] = []
    real_get, real_get_many = context.persistent.get, context.persistent.get_many

    def get(key: str) -> Any:
        calls.append([key])
        return real_get(key)

    def get_many(keys: Any) -> Any:
        calls.append(list(keys))
        return real_get_many(keys)

    monkeypatch.setattr(context.persistent, "get", get)
    monkeypatch.setattr(context.persistent, "get_many", get_many)
    return calls


def test_a_save_changing_no_unique_value_reads_no_unique_key(context: Context,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a write giving up a value of a property whose keys are not built reads its key first: one
    multi-get; when they are built (the record lists them), a key names its holder: nothing is read."""
    monkeypatch.setattr(schema, "READY_TTL", 60.0)  # the record, once read, is not read again here
    new, (a, _) = holders(context, 2)  # serial not ready: two parts share X
    obj = new(a)
    obj.note = "loaded"
    obj.save()  # the record's absence is read and cached: later saves read it no more
    calls = reads_of(context, monkeypatch)
    obj.note = "changed"
    obj.save()
    created = new(data={"serial": "Z"})
    created.save()
    assert calls == []  # no store read at all
    obj.serial = "Y"
    obj.save()
    assert calls == [[context.keys.unique("fxpart", "serial", "X")]]  # one read, of the key given up
    calls.clear()
    created.delete()
    assert calls == [[context.keys.unique("fxpart", "serial", "Z")]]
    calls.clear()
    new(data={"serial": "Q"}).save()
    monkeypatch.setattr(schema, "READY_TTL", 0.05)  # migrate waits this long before checking its keys
    assert migrate(context, [new]).ok
    ready = new(a)  # serial is ready now
    calls.clear()
    ready.serial = "R"
    ready.save()
    ready.delete()
    assert not [keys for keys in calls if any("/u/" in key for key in keys)], calls


def test_a_concurrent_change_of_the_key_given_up_makes_the_save_plan_again(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key of X names C when B reads it; C gives X up before B commits: B's commit fails its check
    of that key, and B reads it again and commits."""
    new, (_, b) = holders(context, 2)
    c = new(data={"serial": "X"})
    c.save()
    old_key = context.keys.unique("fxpart", "serial", "X")
    real_get_many = context.persistent.get_many
    reads: list[Any] = []

    def get_many(keys: Any) -> Any:
        found = real_get_many(keys)
        if old_key in keys:
            reads.append(found.get(old_key))
            if len(reads) == 1:  # between B's read and its commit, C moves to Z (its own key goes)
                monkeypatch.setattr(context.persistent, "get_many", real_get_many)
                c.serial = "Z"
                c.save()
                monkeypatch.setattr(context.persistent, "get_many", get_many)
        return found

    monkeypatch.setattr(context.persistent, "get_many", get_many)
    changed = new(b)
    changed.serial = "Y"
    changed.save()
    assert [entry is not None for entry in reads] == [True, False]  # read C's key, then none
    assert (key_owner(context, "X"), key_owner(context, "Y"), key_owner(context, "Z")) == (None, b, c.guid)


# --- relations declared again ------------------------------------------------------------------


def declare(with_pool: bool) -> tuple[Any, Any]:
    class Pool(DataObject, hybrid_name="fxpool"):
        __properties = [Property("name", str)]

    class Vol(DataObject, hybrid_name="fxvol"):
        __properties = [Property("name", str)]
        __relations = [Relation("pool", Pool, "vols", mandatory=False)] if with_pool else []
    return Pool, Vol


def dropped_link(context: Context) -> tuple[str, str, str]:
    """Link a vol to a pool; drop the relation and migrate (its link goes). Return the guids and link."""
    pool_cls, vol_cls = declare(True)
    pool = pool_cls(data={"name": "p"})
    pool.save()
    vol = vol_cls(data={"name": "v", "pool": pool})
    vol.save()
    assert migrate(context, list(declare(True))).ok
    link = context.keys.link("fxpool", pool.guid, "fxvol", "pool", vol.guid)
    assert migrate(context, list(declare(False))).ok
    assert context.persistent.get(link) is None
    return pool.guid, vol.guid, link


def test_a_relation_declared_again_gets_its_links_back(context: Context) -> None:
    pool, vol, link = dropped_link(context)
    again = declare(True)
    dry = migrate(context, list(again), dry_run=True)
    assert dry.objects["fxvol"] == 1 and context.persistent.get(link) is None
    report = migrate(context, list(again))
    assert report.ok and report.objects["fxvol"] == 1, report.lines
    assert "fxvol: 1 object; write 1 missing link of relation pool" in report.lines[0]
    assert context.persistent.get(link) is not None
    with pytest.raises(LinkedObjectError):
        again[0](pool).delete()
    assert again[1](vol).pool.guid == pool
    assert not check(context).problems
    assert migrate(context, list(again)).lines == ["up to date: nothing to do"]


def test_a_relation_declared_again_pointing_at_a_deleted_target_is_reported_until_fixed(
        context: Context) -> None:
    pool, vol, link = dropped_link(context)
    declare(False)[0](pool).delete()  # nothing links to it any more: allowed
    pool_cls, vol_cls = declare(True)
    for dry_run in (True, False, False):  # a dry run says what the run does; the run says it again
        report = migrate(context, [pool_cls, vol_cls], dry_run=dry_run)
        assert not report.ok, report.lines
        assert [(v.kind, v.field, v.value, v.guids) for v in report.violations] == [
            ("dangling", "pool", pool, (vol,))]
        assert any(line.startswith(f"  no link written for them: Vol.pool of 1 object points at Pool {pool}, "
                                   f"which is not stored: {vol}; point them at a stored Pool or at None")
                   for line in report.lines), report.lines
        assert "1 dangling relation left unlinked (see above); fix the data" in report.lines[-1]
    assert context.persistent.get(link) is None
    obj = vol_cls(vol)
    obj.pool = None
    obj.save()
    report = migrate(context, [pool_cls, vol_cls])
    assert report.ok, report.lines
    assert migrate(context, [pool_cls, vol_cls]).lines == ["up to date: nothing to do"]


# --- the summary ---------------------------------------------------------------------------------


def test_the_summary_counts_no_record_alone_for_a_hybrid_steps_changed(context: Context) -> None:
    class Item(DataObject, hybrid_name="fxitem"):
        __properties = [Property("name", str), Property("flag", str, default="")]

    for name in "ab":
        Item(data={"name": name}).save()

    def mark(letter: str) -> Any:
        return lambda doc: {**doc, "flag": "x"} if doc.get("name") == letter else None

    steps = [Migration(1, "mark a", lambda step: step.transform(Item, mark("a"))),
             Migration(2, "mark b", lambda step: step.transform(Item, mark("b")))]
    report = migrate(context, [Item], migrations=steps)
    assert report.lines[-1] == "migrated: 2 steps run, 2 objects changed", report.lines
    assert report.recorded == []
    assert schema.read_record(context, "fxitem") is not None  # written all the same


# --- removing a field --------------------------------------------------------------------------


def thing(with_legacy: bool) -> Any:
    properties = [Property("name", str), Property("legacy", str, default="x")]

    class Thing(DataObject, hybrid_name="fxthing"):
        __properties = properties if with_legacy else properties[:1]
    return Thing


def test_a_removed_property_is_dropped_by_a_step_and_check_is_clean(context: Context) -> None:
    thing(True)(data={"name": "a", "legacy": "old"}).save()
    new = thing(False)
    assert migrate(context, [new]).ok
    problems = check(context).problems
    assert [problem.kind for problem in problems] == [Kind.UNKNOWN_FIELD]
    assert "drop it with a migration step (step.drop_field(Thing, 'legacy'); see docs/migrations.md)" in \
        problems[0].message
    with pytest.raises(MigrationError, match="still declares 'name'"):
        Migration(1, "drop name", lambda step: step.drop_field(new, "name")).plan()
    step = Migration(1, "drop Thing.legacy", lambda step: step.drop_field(new, "legacy"))
    dry = migrate(context, [new], migrations=[step], dry_run=True)
    assert "step 1 (drop Thing.legacy): would drop field Thing.legacy" in dry.lines
    report = migrate(context, [new], migrations=[step])
    assert report.ok and report.objects["fxthing"] == 1, report.lines
    assert not check(context).problems
    (stored,) = [doc for _, doc in context.persistent.scan(context.keys.docs("fxthing"))]
    assert b"legacy" not in stored.value


def test_a_replacing_load_of_a_holder_giving_up_a_value_leaves_the_key_another_holder_took(
        context: Context) -> None:
    """`dal load --replace` (and `dal copy --replace`) plan each object as a save does: the key of a
    value it gives up is deleted only if it names that object."""
    new, (_, b) = holders(context, 2)
    c = new(data={"serial": "X"})
    c.save()
    text = io.StringIO()
    dump(context, text)
    document = json.loads(text.getvalue())
    for entry in document["hybrids"]["fxpart"]:
        if entry["guid"] == b:
            entry["data"]["serial"] = "Y"  # b gives X up
    document["hybrids"]["fxpart"] = [e for e in document["hybrids"]["fxpart"] if e["guid"] == b]
    document["counts"]["fxpart"] = 1
    load(context, read_dump(io.StringIO(json.dumps(document))), replace=True)
    assert new(b).serial == "Y" and key_owner(context, "Y") == b
    assert key_owner(context, "X") == c.guid  # it still names the holder it was written for
