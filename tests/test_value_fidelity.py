"""A value dal admits is stored exactly, reads back as itself, and its typed views never leak errors.

- An enum whose allowed values are Enum members (``Literal[Status.NEW, ...]``, or a list of members)
  holds, stores and compares each member as its value: the loaded value can be assigned again,
  ``dal check`` finds the document valid, and a query finds it by the member or by the value.
  Allowed values of a subclass of a JSON type (not Enum members) are refused at class creation.
- A typed value whose stored form is not what its type writes (a model built unvalidated, or changed
  in place, holding ``1`` for a ``bool``) is refused, though it equals the value read back.
- A datetime or a time with a time zone (not a fixed offset) is refused: only the offset is stored.
  A ``fold`` is not kept (wall time, as ``==`` compares it), as docs/model.md says.
- Annotated specs (``x: str = Property()``) in a non-hybrid mixin raise ConfigurationError.
- ``Cls.model()`` handles an enum of lists; ``to_model()`` and ``from_model()`` raise dal's errors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pydantic
import pytest
from test_typed_values import _stored

from dal import DataObject, Property, TypedObject
from dal.config import Context
from dal.exceptions import ConfigurationError, InvalidValueError, MissingMandatoryFieldsError
from dal.model.validation import validate_document
from dal.validators import Validator


class Status(str, enum.Enum):
    NEW = "NEW"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Job(TypedObject, hybrid_name="fidjob"):
    name: str = Property()
    status: Literal[Status.NEW, Status.RUNNING] = Property(default=Status.NEW, indexed=True)


class Task(DataObject, hybrid_name="fidtask"):
    __properties = [Property("level", [Level.LOW, Level.HIGH], mandatory=False),
                    Property("status", [Status.NEW, "DONE"], mandatory=False)]


class Flags(pydantic.BaseModel):
    enabled: bool = False
    ratio: float = 0.5


class Box(TypedObject, hybrid_name="fidbox"):
    name: str = Property()
    flags: Flags = Property(default=Flags())


class Meeting(TypedObject, hybrid_name="fidmeeting"):
    starts: dt.datetime | None = Property(mandatory=False)
    daily_at: dt.time | None = Property(mandatory=False)
    moments: list[dt.datetime] | None = Property(mandatory=False)


class Shape(DataObject, hybrid_name="fidshape"):
    __properties = [Property("name", str),
                    Property("dims", [[1, 2], [3], "flat"], mandatory=False)]


class Store(TypedObject, hybrid_name="fidstore"):
    name: str = Property()
    kind: str = Property(default="plain")


BRUSSELS = ZoneInfo("Europe/Brussels")


# enums of Enum members ------------------------------------------------------------------------------

def test_an_enum_of_members_stores_their_values_and_a_loaded_value_is_assignable(local: Context) -> None:
    job = Job(name="j")
    assert job.status == "NEW" and type(job.status) is str
    job.save()
    assert _stored(local, "fidjob", job.guid)[1]["status"] == "NEW"
    loaded = Job(job.guid)
    loaded.status = loaded.status  # what was loaded is an allowed value
    loaded.status = Status.RUNNING
    assert loaded.status == "RUNNING" and type(loaded.status) is str
    loaded.status = "NEW"
    with pytest.raises(InvalidValueError, match="one of 'NEW', 'RUNNING'"):
        loaded.status = Status.STOPPED  # a member of the class, not an allowed value
    assert validate_document(Job._meta, _stored(local, "fidjob", job.guid)[1]).ok


def test_an_enum_of_members_is_found_by_the_member_and_by_its_value(local: Context) -> None:
    Job(name="a").save()
    Job(name="b", status=Status.RUNNING).save()
    assert Job.where(Job.status == Status.NEW).count() == 1
    assert Job.where(Job.status == "NEW").count() == 1
    assert [job.name for job in Job.where(Job.status == Status.RUNNING)] == ["b"]


def test_a_list_of_members_is_an_enum_of_their_values(local: Context) -> None:
    task = Task(data={"level": Level.HIGH, "status": Status.NEW})
    assert (task.level, type(task.level), task.status) == (2, int, "NEW")
    task.save()
    again = Task(task.guid)
    again.level, again.status = again.level, again.status
    again.level = 1
    with pytest.raises(InvalidValueError):
        again.level = True  # 1 == True, but a bool is no allowed value
    assert Task.model().model_json_schema()["properties"]["status"]["anyOf"][0]["enum"] == ["NEW", "DONE"]


class Tag(str):
    """A str subclass that is no Enum: JSON reads it back as a plain str."""


@pytest.mark.parametrize("allowed", [[Tag("a"), "b"], [[Level.LOW]], [{"k": Tag("v")}]],
                         ids=["str-subclass", "member-in-a-list", "subclass-in-a-dict"])
def test_an_allowed_value_of_a_subclass_is_refused_when_declared(allowed: list[Any]) -> None:
    with pytest.raises(InvalidValueError, match=r"stored as a plain .*exact types"):
        Validator("T.x", allowed)


# a stored form its type does not write --------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic warns as it writes a value its type refuses
def test_a_model_holding_an_int_for_a_bool_is_refused_when_assigned(local: Context) -> None:
    box = Box(name="b")
    with pytest.raises(InvalidValueError, match=r"Box\.flags cannot hold .*'enabled': 1"):
        box.flags = Flags.model_construct(enabled=1, ratio=0.5)
    assert box.flags == Flags()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_model_changed_in_place_to_an_int_for_a_bool_is_refused_at_save(local: Context) -> None:
    box = Box(name="b")
    box.save()
    before = _stored(local, "fidbox", box.guid)
    box.flags.enabled = 1  # type: ignore[assignment]  # in place: not validated until save
    with pytest.raises(InvalidValueError, match=r"Box\.flags .*changed in place"):
        box.save()
    assert _stored(local, "fidbox", box.guid) == before
    loaded = Box(box.guid)
    loaded.save()  # an object only loaded writes nothing
    assert _stored(local, "fidbox", box.guid) == before


# time zones -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("starts", dt.datetime(2024, 1, 15, 9, tzinfo=BRUSSELS)),
    ("starts", dt.datetime(2024, 1, 15, 9, tzinfo=ZoneInfo("America/New_York"))),
    ("daily_at", dt.time(9, tzinfo=BRUSSELS)),
    ("moments", [dt.datetime(2024, 1, 15, 9, tzinfo=dt.UTC), dt.datetime(2024, 7, 1, tzinfo=BRUSSELS)]),
], ids=["datetime", "another-zone", "time", "in-a-list"])
def test_a_time_zone_is_refused_with_the_way_to_store_it(field: str, value: Any) -> None:
    meeting = Meeting()
    with pytest.raises(InvalidValueError, match=r"time zone .*Europe/Brussels|time zone .*New_York") as info:
        setattr(meeting, field, value)
    assert "convert it to UTC" in str(info.value) and "another property" in str(info.value)
    assert getattr(meeting, field) is None


def test_a_zone_in_a_model_is_refused() -> None:
    class Slot(pydantic.BaseModel):
        at: dt.datetime

    with pytest.raises(InvalidValueError, match=r"value\.at has the time zone"):
        Validator("T.slot", Slot)(Slot(at=dt.datetime(2024, 1, 15, 9, tzinfo=BRUSSELS)))


@pytest.mark.parametrize("zone", [dt.UTC, dt.timezone(dt.timedelta(hours=2)), ZoneInfo("UTC"), None],
                         ids=["utc", "fixed-offset", "zoneinfo-utc", "naive"])
def test_a_fixed_offset_or_no_zone_is_stored_and_read_back(local: Context, zone: dt.tzinfo | None) -> None:
    starts = dt.datetime(2024, 1, 15, 9, tzinfo=zone)
    daily = dt.time(9, tzinfo=zone)
    meeting = Meeting(starts=starts, daily_at=daily, moments=[starts])
    meeting.save()
    loaded = Meeting(meeting.guid)
    assert (loaded.starts, loaded.daily_at, loaded.moments) == (starts, daily, [starts])
    assert loaded.starts is not None and loaded.starts.utcoffset() == starts.utcoffset()
    revision = _stored(local, "fidmeeting", meeting.guid)[0]
    loaded.starts = loaded.starts  # pydantic's own TzInfo, read back, is a fixed offset
    loaded.save()
    assert _stored(local, "fidmeeting", meeting.guid)[0] == revision


#: 02:30 on 2024-10-27 happens twice in Brussels: fold=1 is the second (CET), an hour after the first
REPEATED = dt.datetime(2024, 10, 27, 2, 30, fold=1)


def test_a_naive_datetime_is_stored_as_wall_time_without_its_fold(local: Context) -> None:
    # refusing fold=1 would make datetime.now() fail for an hour a year; the stored ISO text keeps the
    # wall time, which == compares (fold only picks the instant a repeated wall time converts to)
    meeting = Meeting()
    meeting.starts = REPEATED
    meeting.save()
    back = Meeting(meeting.guid).starts
    assert back == REPEATED and back.fold == 0 and back.replace(fold=1) == REPEATED


# mixins ---------------------------------------------------------------------------------------------

class Audit:
    """A plain mixin declaring a field by annotation: dal reads annotations of hybrids only."""

    created_by: str = Property(default="system")


def test_an_annotated_spec_in_a_plain_mixin_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"Audit\.created_by .*not a hybrid.*created_by: TYPE"):
        class Doc(Audit, TypedObject, hybrid_name="fiddoc"):
            title: str = Property()


# pydantic models ------------------------------------------------------------------------------------

def test_the_model_of_an_enum_of_lists_admits_exactly_its_values(local: Context) -> None:
    model = Shape.model()
    assert model.model_json_schema()["properties"]["dims"]["anyOf"][0] == {"enum": [[1, 2], [3], "flat"]}
    shape = Shape(data={"name": "s", "dims": [1, 2]})
    shape.save()
    again = model.model_validate_json(shape.to_model().model_dump_json())
    assert again.dims == [1, 2]  # type: ignore[attr-defined]
    assert Shape.from_model(again) == shape
    for wrong in ([True, 2], [1.0, 2.0], [9], "round"):
        with pytest.raises(pydantic.ValidationError, match="must be one of"):
            model.model_validate({"guid": shape.guid, "name": "s", "dims": wrong})
    model_value = shape.to_model().dims  # type: ignore[attr-defined]
    model_value.append(3)
    assert shape.dims == [1, 2]  # the model holds a copy


def test_to_model_of_an_object_missing_a_mandatory_field_names_it() -> None:
    with pytest.raises(MissingMandatoryFieldsError, match=r"requires name, .* set it first") as info:
        Store().to_model()
    assert info.value.fields == ("name",)


def test_to_model_of_a_value_changed_in_place_wrongly_names_the_field() -> None:
    class Tagged(TypedObject, hybrid_name="fidtagged"):
        tags: list[int] = Property(default=[])

    tagged = Tagged()
    tagged.tags.append("x")  # type: ignore[arg-type]  # in place: not validated
    with pytest.raises(InvalidValueError, match=r"to_model\(\): tags holds a value .*assign a value"):
        tagged.to_model()


def test_from_model_of_a_dict_says_how_to_make_a_model() -> None:
    with pytest.raises(InvalidValueError, match=r"takes a pydantic model, not a dict.*model_validate"):
        Store.from_model({"name": "x"})  # type: ignore[arg-type]


class _Summed(pydantic.BaseModel):
    a: int = 1
    b: list[int] = []

    @functools.cached_property
    def total(self) -> int:
        return self.a + sum(self.b)


@dataclasses.dataclass
class _Seen:
    a: int = 1

    def __post_init__(self) -> None:
        self.noted: set[int] = set()  # an attribute of the instance, not a field: never stored


def test_what_a_model_or_dataclass_holds_besides_its_fields_does_not_refuse_it() -> None:
    """Only declared fields are stored and read back: a cached_property's value or an attribute
    set in __post_init__ is no difference between the value and its round trip."""
    summed = _Summed(a=2, b=[3])
    assert summed.total == 5  # cached in the instance's __dict__ now
    assert Validator("T.x", _Summed)(summed) == summed
    assert Validator("T.x", _Seen)(_Seen(2)) == _Seen(2)
