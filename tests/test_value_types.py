"""Every declared type stores exactly what it holds: no NaN or infinity anywhere, no lossy type.

JSON has no NaN or infinities, and a value that does not read back as itself makes an
unchanged object look changed (every save writes, a unique key is taken "by another
object" that is itself). So dal refuses both: non-finite floats at assignment, for every
declared type and at any depth, and types whose stored form does not read back as the
value (pydantic's ``SecretStr`` stores its mask) when the class is created.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import io
import ipaddress
import json
import pathlib
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, Secret, SecretBytes, SecretStr, field_serializer

from dal import DataList, DataObject, Dynamic, Property
from dal.config import Context
from dal.exceptions import InvalidQueryError, InvalidValueError
from dal.tools.transfer.dump import read_dump
from dal.tools.transfer.load import load
from dal.validators import Validator

NAN, INF = float("nan"), float("inf")


class Point(BaseModel):
    """A model holding a float: pydantic lets NaN in unless told otherwise."""

    x: float
    y: float = 0.0


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class VtReading(DataObject):
    """Floats behind non-native types, one of them unique."""

    __properties = [Property("name", str),
                    Property("level", float | None, unique=True, mandatory=False),
                    Property("levels", list[float], default=[], mandatory=False),
                    Property("named", dict[str, float], default={}, mandatory=False),
                    Property("point", Point, mandatory=False),
                    Property("pair", tuple[float, float], mandatory=False),
                    Property("anything", Any, mandatory=False),
                    Property("tags", list, default=[], mandatory=False),
                    Property("ratio", float, mandatory=False)]
    __dynamics = [Dynamic("gauge", float | None, 0)]

    def _gauge(self) -> float | None:
        return self.level


class VtTyped(DataObject):
    """Types whose JSON form reads back exactly."""

    __properties = [Property("when", dt.datetime, mandatory=False),
                    Property("day", dt.date, mandatory=False),
                    Property("span", dt.timedelta, mandatory=False),
                    Property("amount", decimal.Decimal, mandatory=False),
                    Property("ident", uuid.UUID, mandatory=False),
                    Property("path", pathlib.Path, mandatory=False),
                    Property("colour", Colour, mandatory=False),
                    Property("address", ipaddress.IPv4Address, mandatory=False),
                    Property("members", set[int], mandatory=False),
                    Property("frozen", frozenset[str], mandatory=False),
                    Property("row", tuple[int, str], mandatory=False),
                    Property("by_id", dict[int, str], mandatory=False),
                    Property("blob", bytes, mandatory=False),
                    Property("point", Point, mandatory=False),
                    Property("either", int | str, mandatory=False)]


# --- point 2: NaN and infinities --------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("level", NAN), ("level", INF), ("level", -INF),
    ("levels", [1.0, NAN]), ("named", {"a": INF}), ("pair", (0.0, NAN)),
    ("point", Point(x=NAN)), ("point", Point(x=1.0, y=-INF)),
    ("anything", NAN), ("anything", {"deep": [[{"x": INF}]]}),
    ("tags", [{"x": NAN}]), ("ratio", NAN),
])
def test_nan_and_infinities_are_refused_at_assignment(field: str, value: Any) -> None:
    reading = VtReading(data={"name": "r"})
    before = getattr(reading, field)
    with pytest.raises(InvalidValueError, match="JSON cannot hold"):
        setattr(reading, field, value)
    assert getattr(reading, field) == before  # the refused value left nothing behind
    with pytest.raises(InvalidValueError, match="JSON cannot hold"):
        VtReading(data={"name": "r", field: value})


def test_nan_is_refused_as_a_default_and_as_an_enum_value() -> None:
    with pytest.raises(InvalidValueError, match="JSON cannot hold"):
        Property("level", float | None, default=NAN)
    with pytest.raises(InvalidValueError, match="JSON cannot hold"):
        Property("level", [1.0, INF])


def test_a_dynamic_returning_nan_is_refused(context: Context) -> None:
    reading = VtReading(data={"name": "r", "level": 1.5})
    assert reading.gauge == 1.5
    reading.__dict__["_data"]["level"] = NAN  # what the loader returns, however it got it
    with pytest.raises(InvalidValueError, match="JSON cannot hold"):
        _ = reading.gauge


def test_an_unchanged_float_object_saves_again_without_writing(context: Context) -> None:
    reading = VtReading(data={"name": "r", "level": 0.1, "levels": [0.5], "point": Point(x=2.5)})
    reading.save()
    revision = reading._revision
    loaded = VtReading(reading.guid)
    loaded.save()  # unchanged: no write, and no unique key "taken" by itself
    reading.save()
    assert loaded._revision == revision == reading._revision


def _dump(hybrid: str, data: dict[str, Any]) -> str:
    document = {"format": "dal-dump", "version": 1, "namespace": "x",
                "hybrids": {hybrid: [{"guid": str(uuid.uuid4()), "data": data}]}}
    return json.dumps(document)  # writes NaN and Infinity, as Python's json module does


@pytest.mark.parametrize("data", [{"name": "r", "level": NAN}, {"name": "r", "levels": [INF]},
                                  {"name": "r", "point": {"x": NAN, "y": 0.0}},
                                  {"name": "r", "anything": [-INF]}])
def test_load_refuses_nan_and_infinities(context: Context, data: dict[str, Any]) -> None:
    with pytest.raises(InvalidValueError, match="JSON cannot hold"):
        load(context, read_dump(io.StringIO(_dump("vtreading", data))))
    assert list(DataList(VtReading)) == []


@pytest.mark.parametrize("condition", [
    ("level", DataList.operator.EQUALS, NAN), ("level", DataList.operator.LT, INF),
    ("ratio", DataList.operator.GE, -INF), ("ratio", DataList.operator.IN, [1.0, NAN]),
    ("levels", DataList.operator.CONTAINS, NAN), ("tags", DataList.operator.CONTAINS, {"x": NAN}),
    ("point", DataList.operator.EQUALS, Point(x=NAN)),
])
def test_queries_refuse_nan_and_infinities(condition: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidQueryError, match="JSON cannot hold"):
        DataList(VtReading, {"type": DataList.where_operator.AND, "items": [condition]})


# --- point 4: lossy types -----------------------------------------------------------------------


class Masked(BaseModel):
    """A model with a secret inside: storing it would store the mask."""

    user: str
    password: SecretStr


class Rounded(BaseModel):
    """A model whose serializer loses precision."""

    x: float

    @field_serializer("x")
    def _rounded(self, value: float) -> float:
        return float(round(value))


@pytest.mark.parametrize("declared", [SecretStr, SecretBytes, SecretStr | None, list[SecretStr],
                                      dict[str, SecretStr], Masked, Secret[int], Secret[str]])
def test_secret_types_are_refused_when_the_class_is_created(declared: Any) -> None:
    with pytest.raises(InvalidValueError, match=r"'\*\*\*\*\*\*\*\*\*\*'(.|\n)*wrap it yourself"):
        Property("password", declared)
    with pytest.raises(InvalidValueError, match="wrap it yourself"):
        Dynamic("password", declared, 10)


def test_a_lossy_serializer_is_refused_when_the_class_is_created() -> None:
    with pytest.raises(InvalidValueError, match="reads back as"):
        Property("where", Rounded)


def test_a_value_that_would_read_back_as_another_is_refused_at_assignment() -> None:
    """A probe cannot find every lossy value: the check at assignment is what guarantees it."""
    holder = Validator("Holder.value", str | dt.datetime)  # a datetime is stored as a str
    assert holder("2020-01-01") == "2020-01-01"
    with pytest.raises(InvalidValueError, match="reads back as '2020-01-01T00:00:00'"):
        holder(dt.datetime(2020, 1, 1))
    anything = Validator("Holder.value", Any)
    with pytest.raises(InvalidValueError, match=r"reads back as \[1\]"):
        anything({1})  # a set is stored as a list
    with pytest.raises(InvalidValueError, match="cannot be stored"):
        Validator("Holder.value", bytes)(b"\xff")  # not UTF-8: pydantic cannot write it as JSON


def test_lossless_types_round_trip_exactly(context: Context) -> None:
    values = {"when": dt.datetime(2020, 1, 2, 3, 4, 5, 6789, tzinfo=dt.timezone(dt.timedelta(hours=2))),
              "day": dt.date(2020, 1, 2), "span": dt.timedelta(days=1, microseconds=5),
              "amount": decimal.Decimal("1.10"), "ident": uuid.uuid4(), "path": pathlib.Path("a/b"),
              "colour": Colour.BLUE, "address": ipaddress.IPv4Address("192.0.2.1"), "members": {1, 2},
              "frozen": frozenset({"a"}), "row": (1, "a"), "by_id": {1: "a"}, "blob": b"bytes",
              "point": Point(x=1.5), "either": "1"}
    obj = VtTyped(data=values)
    obj.save()
    revision = obj._revision
    loaded = VtTyped(obj.guid)
    for name, value in values.items():
        assert getattr(loaded, name) == value and type(getattr(loaded, name)) is type(value), name
    loaded.save()
    assert loaded._revision == revision  # nothing changed, nothing written
