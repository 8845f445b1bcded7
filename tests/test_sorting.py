"""DataList.sort() never raises, whatever is stored: natural order for text, types ranked apart."""

from __future__ import annotations

import datetime
import enum
import json
import sys
from typing import Any

import natsort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from identity_hybrids import Bag, Shelf

from dal import DataList, DataObject, Property, Relation
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.query.ordering import sortable

LIMIT = sys.get_int_max_str_digits() or 4300  # the longest digit run int() converts


class Level(enum.Enum):
    LOW = 2
    MID = 9
    HIGH = 10


class Task(DataObject, hybrid_name="sorttask"):
    __properties: list[Property[Any]] = [Property("name", str), Property("level", Level, mandatory=False)]


def _shelves(*rows: dict[str, object]) -> dict[str, Shelf]:
    made = {}
    for row in rows:
        shelf = Shelf(data=row)
        shelf.save()
        made[str(row["name"])] = shelf
    return made


def test_names_sort_naturally_whatever_their_digits(context: Context) -> None:
    _shelves({"name": "disk10"}, {"name": "disk2"}, {"name": "disk1²"}, {"name": "disk1"},
             {"name": "Disk3"}, {"name": "disk٣"}, {"name": ""})
    result = DataList(Shelf)
    result.sort()
    names = [shelf.name for shelf in result]
    lower = [name for name in names if name.startswith("disk")]
    assert names[0] == "" and lower.index("disk1") < lower.index("disk2") < lower.index("disk10")
    assert names.index("Disk3") < names.index("disk1")  # natural, and case-sensitive as before
    assert sorted(names) == sorted(["disk10", "disk2", "disk1²", "disk1", "Disk3", "disk٣", ""])


def test_a_mixed_type_enum_and_unset_values_sort_without_raising(context: Context) -> None:
    _shelves({"name": "a", "grade": "a"}, {"name": "b", "grade": 1}, {"name": "c", "grade": True},
             {"name": "d", "grade": 2.5}, {"name": "e", "grade": None})
    result = DataList(Shelf)
    result.sort(key="grade")
    kinds = [type(shelf.grade).__name__ for shelf in result]
    assert kinds == ["NoneType", "bool", "int", "float", "str"]  # unset first, then bools, numbers, text
    result.sort(key=["grade", "name"], reverse=True)
    assert [shelf.grade for shelf in result][-1] is None


def test_sorting_by_a_relation_or_a_dict_never_raises(context: Context) -> None:
    bags = [Bag(data={"label": label}) for label in ("x", "y")]
    for bag in bags:
        bag.save()
    _shelves({"name": "a", "bag": bags[1], "extra": {"k": 1}},
             {"name": "b", "bag": bags[0], "extra": {"k": "z"}}, {"name": "c", "extra": {}})
    result = DataList(Shelf)
    result.sort(key="bag")  # validation accepts a relation's name: it sorts by the related guid
    order = [shelf.bag_guid for shelf in result]
    assert order == [None, *sorted(bag.guid for bag in bags)]
    result.sort(key="bag.label")
    assert [shelf.name for shelf in result] == ["c", "b", "a"]
    result.sort(key="extra")
    assert len([shelf.name for shelf in result]) == 3


class SortOwner(DataObject, hybrid_name="sortowner"):
    __properties: list[Property[Any]] = [Property("name", str), Property("born", datetime.datetime)]


class SortItem(DataObject, hybrid_name="sortitem"):
    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("owner", SortOwner, "items", mandatory=False)]


def test_a_path_through_a_related_object_its_model_cannot_read_raises_as_reading_it_would(
        context: Context) -> None:
    owner = SortOwner(data={"name": "o", "born": datetime.datetime(2020, 1, 1)})
    owner.save()
    for name, related in (("a", owner), ("b", None)):
        SortItem(data={"name": name, "owner": related}).save()
    key = context.keys.doc("sortowner", owner.guid)
    document = json.loads(context.persistent.get(key).value)  # type: ignore[union-attr]
    document["born"] = "not a date"  # a typed field converted on load (docs/migrations.md)
    context.persistent.commit([], [Put(key, json.dumps(document).encode())])
    context.invalidate(context.keys.cached_doc("sortowner", owner.guid))
    result = DataList(SortItem)
    result.sort(key="owner")  # the related guid, read without loading the related object
    assert [item.name for item in result] == ["b", "a"]
    with pytest.raises(InvalidValueError, match="no longer fits"):
        result[1].owner.name  # noqa: B018 (reading the path on the object raises)
    with pytest.raises(InvalidValueError, match="no longer fits"):
        result.sort(key="owner.name")


@pytest.mark.parametrize("key", [lambda shelf: [shelf.name], lambda shelf: {"n": shelf.name}])
def test_a_key_function_returning_containers_sorts_too(context: Context, key: object) -> None:
    _shelves({"name": "b"}, {"name": "a"})
    result = DataList(Shelf)
    result.sort(key=key)  # type: ignore[arg-type]
    assert {shelf.name for shelf in result} == {"a", "b"}


# a digit run: short, or about as long as int() converts (leading zeros included), in any script
_RUNS = st.builds(lambda zeros, digit, length: "0" * zeros + digit * length, st.sampled_from([0, 1, 3000]),
                  st.sampled_from("19٣"), st.sampled_from([1, 2, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 700]))
_NAMES = st.lists(st.one_of(st.text("aB -", min_size=1, max_size=2), _RUNS, st.just("²")),
                  max_size=4).map("".join)


@given(st.lists(_NAMES, max_size=6))
def test_digit_runs_too_long_for_an_int_sort_by_value_among_the_others(names: list[str]) -> None:
    natural = natsort.natsort_keygen()
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # no limit: natsort reads every run as the number it is
    try:
        expected = sorted(names, key=natural), sorted(names, key=natural, reverse=True)
    finally:
        sys.set_int_max_str_digits(limit)
    # never a TypeError between an int and a run's text
    assert (sorted(names, key=sortable), sorted(names, key=sortable, reverse=True)) == expected


def test_a_name_with_a_digit_run_too_long_for_an_int_sorts_after_shorter_numbers(context: Context) -> None:
    long = "disk" + "1" * (LIMIT + 700)
    _shelves({"name": long}, {"name": "disk2"}, {"name": "disk10"}, {"name": "disk" + "0" * LIMIT + "5"})
    result = DataList(Shelf)
    result.sort()
    assert [shelf.name for shelf in result] == ["disk2", "disk" + "0" * LIMIT + "5", "disk10", long]
    result.sort(key="name", reverse=True)
    assert result[0].name == long


def test_an_enum_sorts_by_its_values_as_the_ordering_operators_compare_them(context: Context) -> None:
    for name, level in (("h", Level.HIGH), ("l", Level.LOW), ("u", None), ("m", Level.MID)):
        Task(data={"name": name, "level": level}).save()
    result = DataList(Task)
    result.sort(key="level")
    assert [task.name for task in result] == ["u", "l", "m", "h"]  # 2 < 9 < 10, not by JSON text
    below = DataList(Task, {"items": [("level", "LT", Level.HIGH)]})
    below.sort(key="level")
    assert [task.name for task in below] == ["l", "m"]  # the same order as LT/GT's
