"""A save's merge, and a ``to_model()``/``from_model()`` round trip, tell the fields this client changed
from its stored document as this version reads it, not as it is spelt.

A document stored by an earlier version or another client may spell a value otherwise than this version
writes it: a set in another order, ints in a list since widened to floats, a datetime ending ``+00:00``
rather than ``Z`` (or lack a field declared since). Such a field, which this client never touched, is not
its change: when another writer changed it meanwhile, a save that merges keeps that writer's value, and
``datastore_wins=None`` raises no conflict. (Compared as spelt, ``save()`` wrote the loaded value back over
the other writer's, and ``datastore_wins=None`` raised a ConcurrencyError naming a field never touched.)
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import BaseModel

import dal
from dal import DataObject, Mirror, Property
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import ConcurrencyError

JAN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
FEB = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)


class Spelt(DataObject, hybrid_name="mspelt"):
    __properties: list[Property[Any]] = [
        Property("name", str),
        Property("tags", set[str], default=set()),
        Property("samples", list[float], default=[]),
        Property("when", dt.datetime, mandatory=False),
    ]


#: field -> (its value as this version stores it, the same value spelt otherwise, another writer's value)
CASES: dict[str, tuple[Any, Any, Any]] = {
    "tags": ({"a", "b", "c"}, ["c", "b", "a"], {"x"}),  # a set stored unsorted by an earlier version
    "samples": ([1.0, 2.0], [1, 2], [9.5]),  # stored by list[int], since widened to list[float]
    "when": (JAN, "2024-01-02T03:04:05+00:00", FEB),  # another client's offset rather than Z
}

#: a field left out of the stored document
absent = object()


@pytest.fixture
def context(local: Context) -> Context:
    """The embedded pair only (conftest's ``context`` runs over every store pair)."""
    return local


def stored_spelt(context: Context, field: str, spelling: Any) -> str:
    """Store an object whose document holds ``field`` as ``spelling`` (an absent value: the field left
    out, as stored before it was declared); return its guid."""
    obj = Spelt(data={"name": "n", "tags": {"a", "b", "c"}, "samples": [1.0, 2.0], "when": JAN})
    obj.save()
    key = context.keys.doc("mspelt", obj.guid)
    entry = context.persistent.get(key)
    assert entry is not None
    document = json.loads(entry.value)
    if spelling is absent:
        del document[field]
    else:
        document[field] = spelling
    assert context.persistent.commit([], [Put(key, json.dumps(document).encode())]).ok
    context.volatile.delete(context.keys.cached_doc("mspelt", obj.guid))
    return obj.guid



@pytest.mark.parametrize("datastore_wins", [False, None])
@pytest.mark.parametrize("field", list(CASES))
def test_a_field_stored_spelt_otherwise_and_not_changed_here_takes_the_other_writers_value(
        context: Context, field: str, datastore_wins: bool | None) -> None:
    _, spelling, theirs = CASES[field]
    guid = stored_spelt(context, field, spelling)
    mine = Spelt(guid)
    other = Spelt(guid)
    setattr(other, field, theirs)
    other.save()
    mine.name = "renamed"
    mine.save(datastore_wins=datastore_wins)  # merges: never a conflict, the field is not ours
    final = Spelt(guid)
    assert (final.name, getattr(final, field)) == ("renamed", theirs)
    assert (mine.name, getattr(mine, field)) == ("renamed", theirs)


@pytest.mark.parametrize("field", list(CASES))
def test_a_field_stored_spelt_otherwise_and_changed_on_both_sides_is_still_a_conflict(
        context: Context, field: str) -> None:
    _, spelling, theirs = CASES[field]
    guid = stored_spelt(context, field, spelling)
    mine = Spelt(guid)
    other = Spelt(guid)
    setattr(other, field, theirs)
    other.save()
    setattr(mine, field, theirs)
    with pytest.raises(ConcurrencyError, match=field):
        mine.save(datastore_wins=None)  # changed both here and there (even to the same value)


@pytest.mark.parametrize("field", list(CASES))
def test_a_change_here_merges_with_another_writer_who_only_rewrote_the_spelling(
        context: Context, field: str) -> None:
    _, spelling, theirs = CASES[field]
    guid = stored_spelt(context, field, spelling)
    mine = Spelt(guid)
    other = Spelt(guid)
    other.name = "theirs"
    other.save()  # writes the field again in this version's spelling, unchanged
    setattr(mine, field, theirs)
    mine.save(datastore_wins=None)  # only ours changed the field: no conflict
    final = Spelt(guid)
    assert (final.name, getattr(final, field)) == ("theirs", theirs)


@pytest.mark.parametrize("field", list(CASES))
def test_a_save_without_a_conflict_writes_the_field_in_this_versions_spelling(
        context: Context, field: str) -> None:
    stored, spelling, _ = CASES[field]
    guid = stored_spelt(context, field, spelling)
    mine = Spelt(guid)
    mine.name = "renamed"
    mine.save()  # guarded by the revision it read: normalising the untouched field loses nothing
    entry = context.persistent.get(context.keys.doc("mspelt", guid))
    assert entry is not None
    assert json.loads(entry.value)[field] == Spelt._meta.properties[field].validator.to_json(stored)
    assert getattr(Spelt(guid), field) == stored


@pytest.mark.parametrize("field", [*CASES, "absent"])
def test_a_model_round_trip_keeps_another_writers_change_of_a_field_stored_spelt_otherwise(
        context: Context, field: str) -> None:
    if field == "absent":  # the set stored before the field was declared: read as its default
        field, spelling, theirs = "tags", absent, {"x"}
    else:
        _, spelling, theirs = CASES[field]
    guid = stored_spelt(context, field, spelling)
    model = Spelt(guid).to_model()
    other = Spelt(guid)
    setattr(other, field, theirs)
    other.save()
    model.name = "renamed"  # type: ignore[attr-defined]
    back = Spelt.from_model(model)
    back.save()
    final = Spelt(guid)
    assert (final.name, getattr(final, field)) == ("renamed", theirs)



class Inner(BaseModel):
    a: int = 0


class Nested(DataObject, hybrid_name="mspeltnested"):
    __properties: list[Property[Any]] = [Property("name", str), Property("inner", Inner, default=Inner())]


def test_a_nested_field_of_a_newer_model_not_changed_here_is_not_ours_either(context: Context) -> None:
    """Compared as stored too, not only as read: a value this version reads with less than it holds (a
    newer model's nested field) is kept as stored when not changed here, and is no change of ours."""
    obj = Nested(data={"name": "n", "inner": Inner(a=1)})
    obj.save()
    key = context.keys.doc("mspeltnested", obj.guid)

    def store(inner: dict[str, Any]) -> None:
        entry = context.persistent.get(key)
        assert entry is not None
        document = {**json.loads(entry.value), "inner": inner}
        assert context.persistent.commit([], [Put(key, json.dumps(document).encode())]).ok
        context.volatile.delete(context.keys.cached_doc("mspeltnested", obj.guid))

    store({"a": 1, "newer": "x"})
    mine = Nested(obj.guid)
    store({"a": 2, "newer": "y"})  # a client of the newer model changes it
    mine.name = "renamed"
    mine.save(datastore_wins=None)
    entry = context.persistent.get(key)
    assert entry is not None
    assert json.loads(entry.value)["inner"] == {"a": 2, "newer": "y"}


class Grown(BaseModel):
    size: int
    color: str = "red"  # declared since: a value stored before lacks it, and reads as the default


class Holder(DataObject, hybrid_name="mspeltholder"):
    __properties: list[Property[Any]] = [Property("name", str), Property("grown", Grown, mandatory=False)]


@pytest.mark.parametrize("bulk", [False, True], ids=["save", "save_many"])
@pytest.mark.parametrize("field", [*CASES, "nested"])
def test_an_unchanged_object_stored_spelt_otherwise_writes_nothing(
        context: Context, field: str, bulk: bool) -> None:
    """docs/model.md: saving an unchanged loaded object writes nothing, however its stored document
    spells its values (compared as spelt, every such save wrote the document again)."""
    if field == "nested":  # a nested model stored before it gained a field with a default
        holder = Holder(data={"name": "n", "grown": Grown(size=1)})
        holder.save()
        hybrid, guid, key = "mspeltholder", holder.guid, context.keys.doc("mspeltholder", holder.guid)
        assert context.persistent.commit([], [Put(key, b'{"name":"n","grown":{"size":1}}')]).ok
        context.volatile.delete(context.keys.cached_doc(hybrid, guid))
        loaded: DataObject = Holder(guid)
    else:
        guid = stored_spelt(context, field, CASES[field][1])
        key = context.keys.doc("mspelt", guid)
        loaded = Spelt(guid)
    before = context.persistent.get(key)
    assert before is not None
    if bulk:
        dal.save_many([loaded])
    else:
        loaded.save()
    after = context.persistent.get(key)
    assert after is not None
    assert (after.revision, after.value) == (before.revision, before.value)
    assert loaded._revision == before.revision


def rewrite(context: Context, hybrid: str, guid: str, **fields: Any) -> None:
    """Another client writes ``fields`` into the stored document (its own spelling, unchecked)."""
    key = context.keys.doc(hybrid, guid)
    entry = context.persistent.get(key)
    assert entry is not None
    document = {**json.loads(entry.value), **fields}
    assert context.persistent.commit([], [Put(key, json.dumps(document).encode())]).ok
    context.volatile.delete(context.keys.cached_doc(hybrid, guid))


@pytest.mark.parametrize("datastore_wins", [None, True, False])
@pytest.mark.parametrize("field", list(CASES))
def test_another_writers_respelling_is_no_change_of_theirs(
        context: Context, field: str, datastore_wins: bool | None) -> None:
    """docs/model.md: another client renames the object and writes the field again unchanged, in its own
    spelling; this client changed only that field. Theirs is compared as read too, so it is no change of
    theirs: no conflict, and this client's change is kept (compared as spelt on their side, None raised a
    false ConcurrencyError and True dropped this client's change)."""
    _, spelling, mine_value = CASES[field]
    obj = Spelt(data={"name": "n", "tags": {"a", "b", "c"}, "samples": [1.0, 2.0], "when": JAN})
    obj.save()
    mine = Spelt(obj.guid)
    rewrite(context, "mspelt", obj.guid, name="theirs", **{field: spelling})
    setattr(mine, field, mine_value)
    mine.save(datastore_wins=datastore_wins)
    final = Spelt(obj.guid)
    assert (final.name, getattr(final, field)) == ("theirs", mine_value)
    assert (mine.name, getattr(mine, field)) == ("theirs", mine_value)


@pytest.mark.parametrize("datastore_wins", [None, True, False])
def test_a_change_of_a_value_holding_a_newer_models_field_is_still_theirs(
        context: Context, datastore_wins: bool | None) -> None:
    """docs/model.md: the loaded value holds a newer model's nested field, which this version's read drops;
    another writer changes the value to what that read gives. Equal as read proves nothing there: it is
    their change, so a change here too is a conflict (it was called no change of theirs, and overwritten)."""
    obj = Nested(data={"name": "n", "inner": Inner(a=1)})
    obj.save()
    rewrite(context, "mspeltnested", obj.guid, inner={"a": 1, "newer": "x"})
    mine = Nested(obj.guid)
    rewrite(context, "mspeltnested", obj.guid, inner={"a": 1})  # another writer's real change
    mine.inner = Inner(a=5)
    if datastore_wins is None:
        with pytest.raises(ConcurrencyError, match="inner"):
            mine.save(datastore_wins=None)
        return
    mine.save(datastore_wins=datastore_wins)
    entry = context.persistent.get(context.keys.doc("mspeltnested", obj.guid))
    assert entry is not None
    assert json.loads(entry.value)["inner"] == ({"a": 1} if datastore_wins else {"a": 5})


class SpeltBox(DataObject, hybrid_name="mspeltbox"):
    __properties: list[Property[Any]] = [Property("name", str), Property("tags", set[str], default=set())]
    __mirror = Mirror(timeout=1e6)

    def _refresh(self) -> Any:
        return {"seen": True}

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return {}


def test_a_refresh_shows_another_writers_change_of_a_field_stored_spelt_otherwise(context: Context) -> None:
    """docs/model.md: an instance a mirror's refresh brings onto a newer document keeps only what it
    changed as read; a field its loaded document spelt otherwise (a set an earlier version stored
    unsorted) is no change here, so the refresh shows another writer's value of it (it kept the loaded
    one, with an unknown revision)."""
    box = SpeltBox(data={"name": "b", "tags": {"a", "b", "c"}})
    box.save()
    box.refresh_info()  # refreshed once: loads below read it fresh
    rewrite(context, "mspeltbox", box.guid, tags=["c", "b", "a"])
    mine = SpeltBox(box.guid)
    other = SpeltBox(box.guid)
    other.tags = {"x"}
    other.save()
    mine.refresh_info()
    entry = context.persistent.get(context.keys.doc("mspeltbox", box.guid))
    assert entry is not None
    assert (mine.tags, mine._revision) == ({"x"}, entry.revision)
