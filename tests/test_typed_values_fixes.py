"""Typed values stay the object's own across a save, and models carry them exactly.

- A save keeps the object's typed values (a model, a ``list[float]``, a dataclass) where their JSON form
  is what it wrote: a reference taken before the save (``settings = obj.settings``) still belongs to the
  object, so what is changed through it is stored by the next save, as with a plain ``list``. Only a
  value merged in from the store is read afresh, and one the save changed that reads back otherwise (an
  int appended to a ``list[float]``): the object then holds what a load gives.
- Assigning a typed value copies it, as assigning a list does: two objects never share a model.
- ``from_model()`` takes the values ``model_dump()`` gives (a nested model of another class, a subclass,
  a computed field), except where the hybrid declares a dataclass (the dump turns it into a dict, which
  the strict assignment refuses): there the model's attribute. It shares nothing with the model, and
  refuses a model it cannot dump with InvalidValueError.
- ``to_model()`` holds a value equal to the stored one but written otherwise (a datetime of another
  offset, ``Decimal('1.0')`` for ``'1.00'``): what ``save()`` writes, not the old stored value.
- A refused assignment names the declared type (``list[float]``, ``int | str``), not its bare origin.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import pytest

import dal
from dal import Property, TypedObject
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.validators import Validator


class Settings(pydantic.BaseModel):
    size: str = "small"
    retries: int = 0


@dataclasses.dataclass
class Limits:
    soft: int
    hard: int


@pydantic.dataclasses.dataclass
class Soft:
    soft: int


class Job(TypedObject, hybrid_name="tvfjob"):
    name: str = Property(mandatory=False)
    settings: Settings = Property(mandatory=False)
    scores: list[float] = Property(mandatory=False)
    limits: Limits = Property(mandatory=False)
    tags: list = Property(mandatory=False)  # type: ignore[type-arg]


def _job() -> Job:
    return Job(settings=Settings(), scores=[1.0], limits=Limits(1, 2), tags=["a"])


@pytest.mark.parametrize("save", ["save", "save_many"])
def test_a_reference_taken_before_a_save_still_changes_what_the_next_save_stores(local: Context,
                                                                                 save: str) -> None:
    def saved(obj: Job) -> None:
        obj.save() if save == "save" else dal.save_many([obj])

    job = _job()
    settings, scores, limits, tags = job.settings, job.scores, job.limits, job.tags
    settings.size = "big"
    scores.append(2.0)
    saved(job)
    assert job.settings is settings and job.scores is scores and job.limits is limits and job.tags is tags
    settings.retries = 3
    scores.append(3.0)
    limits.hard = 9
    tags.append("c")
    saved(job)
    stored = Job.get(job.guid)
    assert stored.settings == Settings(size="big", retries=3) and stored.scores == [1.0, 2.0, 3.0]
    assert stored.limits == Limits(1, 9) and stored.tags == ["a", "c"]
    assert not job.updated_on_datastore()


def test_a_value_merged_in_from_the_store_is_read_afresh_and_ours_kept(local: Context) -> None:
    job = _job()
    job.save()
    other = Job.get(job.guid)
    other.settings = Settings(size="theirs")
    other.save()
    scores = job.scores
    scores.append(2.0)
    job.save()  # merges: their settings, our scores
    assert job.settings == Settings(size="theirs") and job.scores is scores
    settings = job.settings
    settings.retries = 5
    scores.append(3.0)
    job.save()
    stored = Job.get(job.guid)
    assert stored.settings == Settings(size="theirs", retries=5) and stored.scores == [1.0, 2.0, 3.0]


class Store(TypedObject, hybrid_name="tvfstore"):
    name: str = Property()
    limits: Limits = Property(mandatory=False)
    history: list[Limits] = Property(mandatory=False)
    soft: Soft = Property(mandatory=False)


@pytest.mark.parametrize(("field", "value"), [("limits", Limits(1, 2)), ("history", [Limits(1, 2)]),
                                              ("soft", Soft(1))])
def test_from_model_takes_a_dataclass_typed_property(local: Context, field: str, value: Any) -> None:
    store = Store(name="s", **{field: value})
    store.save()
    model = Store.model()
    incoming = model.model_validate_json(store.to_model().model_dump_json())
    again = Store.from_model(incoming)  # the round trip typed-api.md shows
    assert again == store and not again.updated_on_datastore()
    assert getattr(again, field) == value
    fresh = Store.from_model(model(guid="c0ffee00-0000-4000-8000-000000000001", name="n", **{field: value}))
    assert getattr(fresh, field) == value and getattr(fresh, field) is not value  # a copy, not the model's
    fresh.save()
    assert getattr(Store.get(fresh.guid), field) == value


UTC, PLUS5 = dt.timezone.utc, dt.timezone(dt.timedelta(hours=5))


class Meeting(TypedObject, hybrid_name="tvfmeeting"):
    slots: list[dt.datetime] = Property(mandatory=False)
    prices: list[Decimal] = Property(mandatory=False)


def test_to_model_holds_an_equal_value_written_otherwise_not_the_stored_one(local: Context) -> None:
    meeting = Meeting(slots=[dt.datetime(2020, 1, 1, tzinfo=UTC)], prices=[Decimal("1.00")])
    meeting.save()
    meeting = Meeting.get(meeting.guid)
    meeting.slots = [dt.datetime(2020, 1, 1, 5, tzinfo=PLUS5)]  # the same instant, another offset
    meeting.prices = [Decimal("1.0")]  # the same number, another exponent
    model: Any = meeting.to_model()
    assert [slot.utcoffset() for slot in model.slots] == [dt.timedelta(hours=5)]
    assert [str(price) for price in model.prices] == ["1.0"]
    assert model.model_dump_json() == meeting.to_model().model_dump_json()
    meeting.slots[0] = dt.datetime(2020, 1, 1, tzinfo=UTC)  # changed in place back to the stored form
    assert [slot.utcoffset() for slot in meeting.to_model().slots] == [dt.timedelta(0)]


class Labelled(TypedObject, hybrid_name="tvflabelled"):
    a: list[float] = Property(mandatory=False)
    b: tuple[int, str] = Property(mandatory=False)
    c: Union[int, str] = Property(mandatory=False)  # noqa: UP007 -- the typing form is named alike
    d: Annotated[str, pydantic.Field(max_length=3)] = Property(mandatory=False)
    e: dict[str, int] = Property(mandatory=False)
    f: Optional[dt.date] = Property(mandatory=False)  # noqa: UP045 -- the typing form is named alike
    g: int | None = Property(mandatory=False)


@pytest.mark.parametrize(("field", "value", "named"), [
    ("a", [True], "list[float]"), ("b", (True, "x"), "tuple[int, str]"), ("c", 1.5, "int | str"),
    ("d", "abcd", "str"), ("e", {"k": "v"}, "dict[str, int]"),
    ("f", "x", "date"), ("g", "x", "int")])  # an annotation's None is left out: None is always assignable
def test_a_refusal_names_the_declared_type(field: str, value: Any, named: str) -> None:
    with pytest.raises(InvalidValueError, match=rf"^Labelled\.{field} must be {re.escape(named)}, not "):
        setattr(Labelled(), field, value)


@pytest.mark.parametrize(("declared", "named"), [
    (Optional[dt.date], "date | None"), (list[Annotated[int, pydantic.Field(gt=0)]], "list[int]"),  # noqa: UP045
    (tuple[int, ...], "tuple[int, ...]"), (Literal["a", 1], "Literal['a', 1]"), (Settings, "Settings"),
    (list[Settings] | None, "list[Settings] | None"), (Any, "Any")])
def test_a_validator_names_a_parametrised_type_as_written(declared: Any, named: str) -> None:
    assert Validator("X.f", declared).label == named


class OtherSettings(pydantic.BaseModel):  # another class with Settings' fields: dumped, it is a Settings
    size: str = "big"


class SubSettings(Settings):
    knob: int = 1


class Nested(pydantic.BaseModel):
    name: str = "n"
    settings: OtherSettings = OtherSettings()


class Computed(pydantic.BaseModel):
    hidden: str = pydantic.Field(default="not assigned", exclude=True)

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        return "computed"


@pytest.mark.parametrize("make", [
    lambda: Nested(name="n", settings=OtherSettings()),  # the fields given: see test_model_roundtrip.py
    lambda: Job.model().model_validate({"guid": "c0ffee00-0000-4000-8000-000000000002",
                                        "name": "n", "settings": SubSettings(size="big")})],
    ids=["another-class", "subclass"])
def test_from_model_takes_the_values_model_dump_gives(local: Context, make: Any) -> None:
    job = Job.from_model(make())
    assert job.name == "n" and job.settings == Settings(size="big") and type(job.settings) is Settings
    job.save()
    assert Job.get(job.guid).settings == Settings(size="big")


def test_from_model_takes_a_computed_field_and_leaves_an_excluded_one(local: Context) -> None:
    assert Job.from_model(Computed()).name == "computed"
    built: Any = Job.model().model_construct(name="x")  # no guid: a new object
    assert Job.from_model(built).name == "x"


class Broken(pydantic.BaseModel):
    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def name(self) -> str:
        raise AttributeError("no name yet")


def test_from_model_of_a_model_that_cannot_be_dumped_raises_a_typed_error(local: Context) -> None:
    with pytest.raises(InvalidValueError, match=r"Job\.from_model\(\) cannot read the model's values"):
        Job.from_model(Broken())


def test_a_typed_value_assigned_from_another_object_is_a_copy(local: Context) -> None:
    first = Store(name="a", limits=Limits(1, 2), history=[Limits(3, 4)])
    first.save()
    second = Store(name="b")
    second.limits, second.history = first.limits, first.history
    job, other = _job(), Job()
    other.settings = job.settings
    assert second.limits is not first.limits and second.history[0] is not first.history[0]
    assert other.settings is not job.settings
    dal.save_many([first, second, job, other])
    first.limits.hard, first.history[0].hard, job.settings.size = 9, 9, "changed through the first"
    dal.save_many([second, other])
    assert Store.get(second.guid).limits == Limits(1, 2) and Store.get(second.guid).history == [Limits(3, 4)]
    assert Job.get(other.guid).settings == Settings()


class Floats(TypedObject, hybrid_name="tvffloats"):
    scores: list[float] = Property(mandatory=False)
    weights: dict[str, float] = Property(mandatory=False)


def test_a_save_leaves_the_object_what_a_load_reads(local: Context) -> None:
    floats = Floats(scores=[1.5], weights={})
    floats.save()
    floats.scores.append(2)  # an int where a float is declared: stored as 2.0
    floats.weights["k"] = 1
    floats.save()
    fresh = Floats.get(floats.guid)
    assert repr(floats.scores) == repr(fresh.scores) == "[1.5, 2.0]"
    assert repr(floats.weights) == repr(fresh.weights) == "{'k': 1.0}"
    scores = floats.scores  # a value that reads back as itself stays the object's own
    scores.append(3.0)
    floats.save()
    assert floats.scores is scores and Floats.get(floats.guid).scores == [1.5, 2.0, 3.0]


class Plain(dal.DataObject, hybrid_name="tvfplain"):
    __properties = [Property("rows", list, mandatory=False), Property("mapping", dict, mandatory=False),
                    Property("choice", [[1, 2], [3]], mandatory=False)]


def test_an_assigned_list_or_dict_is_a_copy_at_every_depth(local: Context) -> None:
    inner, pair = [1, 2], [1, 2]
    plain = Plain(rows=[inner, {"k": inner}], mapping={"a": inner})
    plain.choice = pair
    inner.append(99)  # the caller's nested list changes after the assignment ...
    pair.append(99)
    assert plain.rows == [[1, 2], {"k": [1, 2]}] and plain.mapping == {"a": [1, 2]} and plain.choice == [1, 2]
    plain.save()  # ... and neither the object nor what its save stores follows it
    stored = Plain.get(plain.guid)
    assert (stored.rows, stored.mapping, stored.choice) == ([[1, 2], {"k": [1, 2]}], {"a": [1, 2]}, [1, 2])
    other = Plain.get(plain.guid)
    other.rows = stored.rows  # from one object to another alike
    stored.rows[0].append(5)
    assert other.rows == [[1, 2], {"k": [1, 2]}]
