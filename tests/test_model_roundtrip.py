"""A hybrid's pydantic model round trip: what ``from_model`` assigns, and what ``model_validate`` admits.

- ``from_model`` assigns only the fields a model was given (``model_fields_set``): a partial model, or a
  partial JSON body, updates those and leaves the others as stored (a new object: the defaults).
- A model ``to_model()`` made remembers (aside, not a field) what the object held as loaded:
  ``from_model`` assigns only what the model changed, so another writer's change to a field the model
  did not change survives, as ``save()`` merges two objects; an unchanged model writes nothing. A
  model that went through JSON has forgotten it: every field its body holds is assigned.
- ``Cls.model().model_validate(data)`` admits what assigning admits (no ``'12'`` for an ``int``,
  ``'off'`` for a ``bool``, ``True`` for an enum ``[1, 2]``, seconds for a ``datetime``), and, for a
  type stored as text, the JSON form (ISO dates, UUID strings, a ``Decimal``, an ``Enum`` by value):
  ``model_validate(json.loads(body))`` admits what ``model_validate_json(body)`` admits.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Any, Literal

import pydantic
import pytest

from dal import Property, Relation, TypedObject
from dal.config import Context
from dal.exceptions import MissingMandatoryFieldsError


class RtKind(TypedObject, hybrid_name="rtkind"):
    name: str = Property()


class RtStore(TypedObject, hybrid_name="rtstore"):
    name: str = Property(unique=True)
    status: Literal["NEW", "RUNNING", "STOPPED"] = Property(default="NEW")
    tags: list[str] = Property(default=[], mandatory=False)
    size: int | None = Property(mandatory=False)
    kind: RtKind | None = Relation(foreign_key="stores", mandatory=False)


def _stored(context: Context, obj: Any) -> dict[str, Any]:
    entry = context.persistent.get(context.keys.doc(obj._meta.name, obj.guid))
    assert entry is not None
    return {"revision": entry.revision, **json.loads(entry.value)}


def _store(name: str) -> RtStore:
    kind = RtKind(name="k")
    kind.save()
    store = RtStore(name=name, kind=kind, size=3)
    store.save()
    return store


def _tag_meanwhile(guid: str) -> None:
    other = RtStore.get(guid)  # writer B
    other.tags = ["gold"]
    other.save()


@pytest.mark.parametrize("edit", ["copy", "attribute", "in-place"])
def test_a_to_model_round_trip_keeps_what_another_writer_changed_meanwhile(local: Context, edit: str) -> None:
    store = _store("prod-1")
    model: Any = RtStore.get(store.guid).to_model()  # writer A
    _tag_meanwhile(store.guid)
    if edit == "copy":
        model = model.model_copy(update={"status": "RUNNING"})
    elif edit == "attribute":
        model.status = "RUNNING"
    else:  # changed in place: the model's own change, assigned
        model.tags.append("blue")
    RtStore.from_model(model).save()
    stored = RtStore.get(store.guid)
    if edit == "in-place":
        assert stored.tags == ["blue"] and stored.status == "NEW"  # A's change to tags wins: B's is older
    else:
        assert stored.status == "RUNNING" and stored.tags == ["gold"]
    assert stored.kind is not None and stored.size == 3


def test_an_unchanged_to_model_round_trip_writes_nothing(local: Context) -> None:
    store = _store("prod-2")
    model = RtStore.get(store.guid).to_model()
    _tag_meanwhile(store.guid)
    before = _stored(local, store)
    again = RtStore.from_model(model)
    assert again.tags == ["gold"] and not again.updated_on_datastore()
    again.save()
    assert _stored(local, store) == before  # not even a new revision


def test_a_model_handed_to_from_model_twice_writes_its_second_change(local: Context) -> None:
    store = _store("prod-twice")
    model = RtStore.get(store.guid).to_model()
    before = model.status
    model.status = "STOPPED"
    RtStore.from_model(model).save()
    model.status = before  # changed back, on the same model: it must be written, not taken as unchanged
    RtStore.from_model(model).save()
    assert RtStore.get(store.guid).status == before


def test_an_unsaved_change_the_model_was_made_with_is_assigned(local: Context) -> None:
    store = _store("prod-3")
    loaded = RtStore.get(store.guid)
    loaded.status = "STOPPED"  # not saved: the model holds it, and from_model assigns it
    model = loaded.to_model()
    _tag_meanwhile(store.guid)
    RtStore.from_model(model).save()
    stored = RtStore.get(store.guid)
    assert stored.status == "STOPPED" and stored.tags == ["gold"]


def test_the_model_keeps_its_schema_dump_and_equality(local: Context) -> None:
    store = _store("prod-4")
    model = RtStore.get(store.guid).to_model()
    assert set(model.model_dump()) == {"guid", "name", "status", "tags", "size", "kind_guid"}
    assert set(RtStore.model().model_json_schema()["properties"]) == set(model.model_dump())
    through_json = RtStore.model().model_validate_json(model.model_dump_json())
    assert through_json == model and through_json.model_dump() == model.model_dump()


def test_a_partial_model_assigns_only_the_fields_it_was_given(local: Context) -> None:
    store = _store("prod-5")
    store.status = "RUNNING"
    store.save()
    _tag_meanwhile(store.guid)
    model = RtStore.model()
    RtStore.from_model(model(guid=store.guid, name="renamed")).save()  # keywords: name only
    body = json.dumps({"guid": store.guid, "name": "renamed", "size": 7})  # a PATCH-like JSON body
    RtStore.from_model(model.model_validate_json(body)).save()
    stored = RtStore.get(store.guid)
    assert (stored.name, stored.status, stored.tags, stored.size) == ("renamed", "RUNNING", ["gold"], 7)
    assert stored.kind is not None  # not reset to None


def test_a_full_json_body_assigns_every_field_it_holds(local: Context) -> None:
    store = _store("prod-6")
    payload = RtStore.get(store.guid).to_model().model_dump_json()  # a client's GET
    _tag_meanwhile(store.guid)
    incoming = RtStore.model().model_validate_json(payload).model_copy(update={"status": "RUNNING"})
    RtStore.from_model(incoming).save()  # its PUT of every field: its tags too
    stored = RtStore.get(store.guid)
    assert stored.status == "RUNNING" and stored.tags == []


def test_a_partial_model_of_a_new_object_takes_the_defaults_and_the_mandatory_rule(local: Context) -> None:
    guid = str(uuid.uuid4())
    new = RtStore.from_model(RtStore.model()(guid=guid, name="fresh"))
    assert (new.guid, new.status, new.tags, new.size, new.kind) == (guid, "NEW", [], None, None)
    new.save()
    bare: Any = RtStore.model().model_construct(guid=str(uuid.uuid4()), status="RUNNING")
    with pytest.raises(MissingMandatoryFieldsError, match="name"):
        RtStore.from_model(bare).save()


# what model_validate admits -------------------------------------------------------------------------

class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


class Inner(pydantic.BaseModel):
    at: dt.datetime
    count: int = 0


class RtBox(TypedObject, hybrid_name="rtbox"):
    name: str = Property()
    size: int | None = Property(mandatory=False)
    ratio: float | None = Property(mandatory=False)
    flag: bool | None = Property(mandatory=False)
    prio: Literal[1, 2] | None = Property(mandatory=False)
    when: dt.datetime | None = Property(mandatory=False)
    day: dt.date | None = Property(mandatory=False)
    hour: dt.time | None = Property(mandatory=False)
    ident: uuid.UUID | None = Property(mandatory=False)
    price: Decimal | None = Property(mandatory=False)
    colour: Colour | None = Property(mandatory=False)
    inner: Inner | None = Property(mandatory=False)
    slots: list[dt.datetime] | None = Property(mandatory=False)
    counts: list[int] | None = Property(mandatory=False)


@pytest.mark.parametrize(("field", "value"), [
    ("size", "12"), ("size", 12.0), ("size", True), ("ratio", "1.5"), ("flag", "off"), ("flag", 1),
    ("prio", True), ("prio", 1.0), ("prio", "1"), ("when", 1700000000), ("when", "not a date"),
    ("day", 19000), ("ident", 5), ("price", True), ("colour", "RED"),
    ("inner", {"at": "2024-01-01", "count": "3"}), ("counts", ["1"]), ("counts", {1}),
    ("day", b"2024-01-01"), ("name", b"n"), ("guid", b"c0ffee00-0000-4000-8000-000000000001"),
])
def test_model_validate_refuses_what_assigning_refuses(field: str, value: Any) -> None:
    data = {"guid": "c0ffee00-0000-4000-8000-000000000001", "name": "n", field: value}
    with pytest.raises(pydantic.ValidationError):
        RtBox.model().model_validate(data)
    if not isinstance(value, (bytes, set)):  # the same body, read by pydantic's JSON parser
        with pytest.raises(pydantic.ValidationError):
            RtBox.model().model_validate_json(json.dumps(data))


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("size", 12, 12), ("ratio", 2, 2.0), ("flag", False, False), ("prio", 2, 2),
    ("when", "2024-01-01T10:00:00Z", dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone.utc)),
    ("when", "2024-01-01T10:00:00+02:00", dt.datetime(2024, 1, 1, 8, tzinfo=dt.timezone.utc)),
    ("day", "2024-01-31", dt.date(2024, 1, 31)), ("hour", "10:30:00", dt.time(10, 30)),
    ("ident", "0a7e6a5c-1d5f-4f7e-9a52-6d4c1f3e2b10", uuid.UUID("0a7e6a5c-1d5f-4f7e-9a52-6d4c1f3e2b10")),
    ("price", "1.50", Decimal("1.50")), ("price", 1.5, Decimal("1.5")), ("colour", "red", Colour.RED),
    ("colour", 2, Colour.BLUE), ("inner", {"at": "2024-01-01T00:00:00Z", "count": 3},
                                 Inner(at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), count=3)),
    ("slots", ["2024-01-01T00:00:00Z"], [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)]),
])
def test_model_validate_admits_the_json_form_of_a_type_stored_as_text(local: Context, field: str, value: Any,
                                                                      expected: Any) -> None:
    data = {"guid": str(uuid.uuid4()), "name": "n", field: value}
    from_dict = RtBox.model().model_validate(json.loads(json.dumps(data)))
    assert from_dict == RtBox.model().model_validate_json(json.dumps(data))
    assert getattr(from_dict, field) == expected
    box = RtBox.from_model(from_dict)
    box.save()
    assert getattr(RtBox.get(box.guid), field) == expected


def test_model_validate_admits_the_python_values_assigning_admits() -> None:
    at = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    model: Any = RtBox.model().model_validate({
        "guid": str(uuid.uuid4()), "name": "n", "when": at, "colour": Colour.BLUE, "price": Decimal("2.5"),
        "inner": Inner(at=at), "ident": uuid.UUID(int=1), "prio": 1})
    assert (model.when, model.colour, model.price, model.inner, model.prio) == (
        at, Colour.BLUE, Decimal("2.5"), Inner(at=at), 1)
