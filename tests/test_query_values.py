"""Query values the grammar must get right: datetimes ordered by instant whatever their offset, booleans
never ordered against numbers, values JSON cannot store refused when the query is built, a relation
compared with an object of its target hybrid only, and the builder's ``in_()`` refusing what a
hand-written ``IN`` refuses."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from enum import IntEnum
from typing import Annotated, Any, Optional

import pytest
from pydantic import Field
from query_hybrids import Item

from dal import DataList, DataObject, Property, Relation
from dal.config import Context
from dal.exceptions import InvalidQueryError
from dal.query.filters import predicate
from dal.query.grammar import Condition, Group, compile_query, satisfies
from dal.query.ordering import sortable

UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))


class Moment(DataObject, hybrid_name="qvmoment"):
    """Stores datetimes, times and dates as pydantic writes them: ISO text with the value's own offset."""

    __properties: list[Property[Any]] = [Property("name", str),
                                         Property("at", dt.datetime, mandatory=False),
                                         Property("clock", dt.time, mandatory=False),
                                         Property("day", dt.date, mandatory=False)]


class LaterMoment(Moment):
    """A subclass hybrid: another hybrid, which Pointer.moment cannot hold."""


class Pointer(DataObject, hybrid_name="qvpointer"):
    """Reaches Moment through a relation, so ``moment.at`` is resolved per batch (the tree walk)."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("moment", Moment, "pointers", mandatory=False)]


class Graded(DataObject, hybrid_name="qvgraded"):
    """A mixed-type enum, indexed: booleans, numbers and text in one field."""

    __properties: list[Property[Any]] = [Property("name", str),
                                         Property("grade", [1, True, "a", 2.5, False], mandatory=False,
                                                  indexed=True)]


class Tray(DataObject, hybrid_name="qvtray"):
    """Reaches Graded through a relation, so ``graded.grade`` is resolved per batch (the tree walk)."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("graded", Graded, "trays", mandatory=False)]


def _names(result: DataList[Any]) -> list[str]:
    return sorted(obj.name for obj in result)


# --- datetimes and times order by instant --------------------------------------------------------


def _events() -> dict[str, Moment]:
    made = {}
    for name, at, clock in [("e1", dt.datetime(2024, 1, 1, 10, tzinfo=PLUS2), dt.time(10, tzinfo=PLUS2)),
                            ("e2", dt.datetime(2024, 1, 1, 9, 0, tzinfo=UTC), dt.time(9, 0, tzinfo=UTC)),
                            ("naive", dt.datetime(2024, 1, 1, 8, 30), dt.time(8, 30))]:
        made[name] = Moment(data={"name": name, "at": at, "clock": clock})
        made[name].save()
    return made


def test_ordering_a_datetime_compares_instants_not_texts(context: Context) -> None:
    """e1 is 08:00 UTC written as 10:00+02:00: before e2 (09:00Z), though its text sorts after."""
    events = _events()
    cut = dt.datetime(2024, 1, 1, 8, 30, tzinfo=UTC)
    assert _names(DataList(Moment, {"items": [("at", "LT", cut)]})) == ["e1"]
    assert _names(DataList(Moment, {"items": [("at", "GT", cut)]})) == ["e2"]
    assert _names(DataList(Moment, {"items": [("at", "LE", cut.replace(hour=8, minute=0))]})) == ["e1"]
    assert _names(DataList(Moment, {"items": [("at", "GE", cut.replace(hour=8, minute=0))]})) == ["e1", "e2"]
    # naive and aware have no order: a naive bound matches only naive values, and the reverse
    assert _names(DataList(Moment, {"items": [("at", "LT", dt.datetime(2025, 1, 1))]})) == ["naive"]
    # times too
    assert _names(DataList(Moment, {"items": [("clock", "LT", dt.time(8, 30, tzinfo=UTC))]})) == ["e1"]
    assert _names(DataList(Moment, {"items": [("clock", "GE", dt.time(8, 30))]})) == ["naive"]
    # through a relation (resolved per batch, by the tree walk rather than the compiled filter)
    for name, event in events.items():
        Pointer(data={"name": f"to {name}", "moment": event}).save()
    assert _names(DataList(Pointer, {"items": [("moment.at", "LT", cut)]})) == ["to e1"]
    later = DataList(Pointer, {"items": [("moment.clock", "GT", dt.time(8, 30, tzinfo=UTC))]})
    assert _names(later) == ["to e2"]


def test_equality_compares_the_stored_value_as_an_index_does(context: Context) -> None:
    """EQUALS is the stored value (its offset included), whatever the plan; a range finds the instant."""
    _events()
    instant = dt.datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    assert _names(DataList(Moment, {"items": [("at", "EQUALS", instant)]})) == []
    assert _names(DataList(Moment, {"items": [("at", "EQUALS", instant.astimezone(PLUS2))]})) == ["e1"]
    assert _names(DataList(Moment, {"items": [("at", "GE", instant), ("at", "LE", instant)]})) == ["e1"]


def test_sorting_is_chronological_naive_values_first(context: Context) -> None:
    _events()
    Moment(data={"name": "unset"}).save()
    for key, expected in [("at", ["unset", "naive", "e1", "e2"]), ("clock", ["unset", "naive", "e1", "e2"])]:
        result = DataList(Moment)
        result.sort(key=key)
        assert [obj.name for obj in result] == expected, key
        result.sort(key=key, reverse=True)
        assert [obj.name for obj in result] == expected[::-1], key


def test_sort_keys_never_overflow_and_keep_types_apart() -> None:
    far = dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # UTC would be year 10000
    values = [far, dt.datetime.max, dt.datetime.min.replace(tzinfo=UTC), dt.date(2024, 1, 1), dt.time(1, 0)]
    ordered = sorted(values, key=sortable)
    assert ordered == [dt.date(2024, 1, 1), dt.datetime.max, dt.datetime.min.replace(tzinfo=UTC), far,
                       dt.time(1, 0)]


@pytest.mark.parametrize("operator", ["LT", "GT", "LE", "GE"])
@pytest.mark.parametrize("stored", ["2024-01-01T10:00:00+02:00", "2024-01-01T08:00:00Z",
                                    "2024-01-01T08:00:00", "2024-01-01T07:59:59.999999-00:00", None, 7,
                                    "not a date", ["x"]])
def test_the_compiled_filter_orders_datetimes_as_the_tree_walk(operator: str, stored: Any) -> None:
    root = compile_query(Moment._meta, {"items": [("at", operator, dt.datetime(2024, 1, 1, 8, tzinfo=UTC))]})
    condition = root.items[0]
    assert isinstance(condition, Condition) and condition.moment is not None
    assert predicate(condition)(stored) is satisfies(condition, stored)


def test_only_datetimes_and_times_are_parsed() -> None:
    """Dates' ISO texts order as the dates do; other fields keep the plain comparison (no parse)."""
    for field, value in [("day", dt.date(2024, 1, 1)), ("name", "x")]:
        root = compile_query(Moment._meta, {"items": [(field, "LT", value)]})
        assert isinstance(root.items[0], Condition) and root.items[0].moment is None


# --- booleans never order against numbers ---------------------------------------------------------


def test_a_boolean_never_orders_against_a_number(context: Context) -> None:
    """True is not 1 for LT/GT/LE/GE either, as for EQUALS and as sort() ranks them apart: on a mixed
    enum a boolean bound finds booleans only, a number bound numbers only, on every plan (a scan, index
    candidates verified, a dotted path walked per batch, a cached result)."""
    for name, grade in [("one", 1), ("true", True), ("false", False), ("half", 2.5), ("a", "a"),
                        ("unset", None)]:
        graded = Graded(data={"name": name, "grade": grade})
        graded.save()
        Tray(data={"name": f"to {name}", "graded": graded}).save()
    cases = [("GE", True, ["true"]), ("LE", True, ["false", "true"]), ("GT", False, ["true"]),
             ("LT", 2.5, ["one"]), ("GE", 1, ["half", "one"]), ("LE", 1, ["one"]), ("LT", 1, []),
             ("GE", "a", ["a"])]
    for _ in range(2):  # computed, then (where cacheable) from the result cache
        for operator, bound, expected in cases:
            condition = ("grade", operator, bound)
            assert _names(DataList(Graded, {"items": [condition]})) == expected, condition
            candidates = DataList(Graded, {"items": [("grade", "IN", [1, True, False, 2.5, "a"]), condition]})
            assert _names(candidates) == expected, condition
            walked = DataList(Tray, {"items": [("graded.grade", operator, bound)]})
            assert _names(walked) == [f"to {name}" for name in expected], condition
    mixed = DataList(Graded, {"items": [("grade", "IN", [1, True]), ("grade", "GE", True)]})
    assert "index lookup on Graded: grade IN [1, True] -> 2" in str(mixed.explain())  # 1 and True, then
    assert _names(mixed) == ["true"]  # verified: 1 is no boolean


# --- values JSON cannot store ----------------------------------------------------------------------


@pytest.mark.parametrize("item", [("note2", "EQUALS", "bad\ud800"), ("note", "IN", ["ok", "bad\ud800"]),
                                  ("name", "CONTAINS", "\udfff"), ("tags", "CONTAINS", "\ud800"),
                                  ("tags", "CONTAINS", [10**5000]), ("size", "EQUALS", 10**5000),
                                  ("size", "LT", 10**5000), ("size", "IN", [1, -(10**5000)])])
def test_a_value_json_cannot_store_is_refused_when_the_query_is_built(item: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidQueryError):  # not a UnicodeEncodeError or a ValueError when it runs
        DataList(Item, {"items": [item]})


class Loose(DataObject, hybrid_name="qvloose"):
    """Untyped containers: any JSON element, stored as JSON (a tuple or a set as a list)."""

    __properties: list[Property[Any]] = [Property("name", str), Property("pair", tuple, mandatory=False),
                                         Property("bag", frozenset, mandatory=False)]


class Level(IntEnum):
    ONE = 1


@pytest.mark.parametrize("value, refused", [
    (("x", 1), r"holds a tuple .*compare with a list"), ([["x", ("y",)]], r"\[0\]\[1\] holds a tuple"),
    ({1}, r"holds a set .*compare with a list"), (frozenset({"x"}), r"holds a frozenset"),
    ({1: "x"}, r"has the key 1; JSON object keys are strings"),
    ({1: "x", "b": 2}, r"has the key 1"),  # was accepted, then digest() raised a raw TypeError
    ({"k": [{2: "x"}]}, r"has the key 2")])
def test_contains_on_an_untyped_container_takes_json_data_only(value: Any, refused: str) -> None:
    """An element of an untyped list, tuple or set is stored as JSON data: anything else is refused as
    an assignment refuses it, not compared (never equal) and cached under the digest of its JSON text."""
    for hybrid, field in [(Item, "tags"), (Loose, "pair"), (Loose, "bag")]:
        with pytest.raises(InvalidQueryError, match=rf"{hybrid.__name__}\.{field} CONTAINS takes an element "
                                                   rf"as the field stores it, and the value.*{refused}"):
            DataList(hybrid, {"items": [(field, "CONTAINS", value)]})


def test_contains_on_an_untyped_list_compares_the_stored_json_form(context: Context) -> None:
    Item(data={"name": "a", "tags": [["x", 1], 1, {"k": "v"}, "gold"]}).save()
    Item(data={"name": "b", "tags": ["x"]}).save()
    condition = compile_query(Item._meta, {"items": [("tags", "CONTAINS", Level.ONE)]}).items[0]
    assert isinstance(condition, Condition) and type(condition.value) is int  # the value the filter compares
    for _ in range(2):  # computed, then from the result cache: each under the digest of what it compares
        for value, expected in [(Level.ONE, ["a"]), (1, ["a"]), (["x", 1], ["a"]), ("x", ["b"]),
                                (OrderedDict(k="v"), ["a"]), (1.0, []), ([1, "x"], [])]:
            assert _names(DataList(Item, {"items": [("tags", "CONTAINS", value)]})) == expected, value


# --- relations compared with an object ---------------------------------------------------------


def test_a_relation_compared_with_another_hybrid_is_refused() -> None:
    moment, pointer = Moment(data={"name": "m"}), Pointer(data={"name": "p"})
    later = LaterMoment(data={"name": "l"})
    assert isinstance(compile_query(Pointer._meta, {"items": [("moment", "EQUALS", moment)]}), Group)
    for operator, value in [("EQUALS", pointer), ("NOT_EQUALS", pointer), ("IN", [moment, pointer]),
                            ("EQUALS", later)]:  # a subclass hybrid: assigning it is refused too
        with pytest.raises(InvalidQueryError, match=r"Pointer\.moment holds a Moment, not <"):
            compile_query(Pointer._meta, {"items": [("moment", operator, value)]})


# --- the builder's in_() -------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["ab", b"ab", {"a": 1}, 5, None])
def test_the_builder_in_refuses_what_the_grammar_refuses(values: Any) -> None:
    built = Item.name.in_(values).grammar()
    assert built["items"][0] == ("name", "IN", values)  # passed on as it is, not split into letters
    with pytest.raises(InvalidQueryError, match="IN needs a list of values"):
        compile_query(Item._meta, built)


def test_the_builder_in_still_takes_any_iterable() -> None:
    assert Item.name.in_(name for name in ("a", "b")).grammar()["items"][0] == ("name", "IN", ["a", "b"])
    assert Item.name.in_(("a",)).grammar()["items"][0] == ("name", "IN", ["a"])


# --- range bounds on number fields ------------------------------------------------------------


class Gauge(DataObject, hybrid_name="qvgauge"):
    """Numbers declared optional, as a union with None, constrained, or both."""

    __properties: list[Property[Any]] = [
        Property("opt", Optional[int], mandatory=False),  # noqa: UP045 (the spelling under test)
        Property("union", int | None, mandatory=False),
        Property("pct", Annotated[int, Field(ge=0, le=100)], default=0),
        Property("share", Optional[Annotated[float, Field(ge=0, le=1)]], mandatory=False)]  # noqa: UP045


@pytest.mark.parametrize(("field", "operator", "bound", "expected"), [
    ("opt", "LT", 50.5, 1), ("opt", "GT", 50.5, 0), ("union", "LE", 50.5, 1), ("union", "GE", 10**400, 0),
    ("pct", "LT", 200, 1), ("pct", "GE", -1, 1), ("pct", "GT", 100, 0),
    ("share", "LT", 2, 1), ("share", "GT", -1, 1), ("share", "GE", 0.75, 0)])
def test_a_range_on_an_optional_or_constrained_number_takes_any_number(
        context: Context, field: str, operator: str, bound: Any, expected: int) -> None:
    Gauge(data={"opt": 50, "union": 50, "pct": 50, "share": 0.5}).save()
    Gauge(data={"pct": 0}).save()  # unset optional numbers match no range
    matching = [obj for obj in DataList(Gauge, {"items": [(field, operator, bound)]})
                if getattr(obj, field) not in (None, 0)]
    assert len(matching) == expected


def test_a_range_bound_on_a_number_field_is_still_a_number() -> None:
    for bound in ("50", True, None):
        with pytest.raises(InvalidQueryError):
            compile_query(Gauge._meta, {"items": [("pct", "LT", bound)]})
