"""DataList.sort() never raises, whatever is stored: natural order for text, types ranked apart."""

from __future__ import annotations

import pytest
from identity_hybrids import Bag, Shelf

from dal import DataList
from dal.config import Context


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


@pytest.mark.parametrize("key", [lambda shelf: [shelf.name], lambda shelf: {"n": shelf.name}])
def test_a_key_function_returning_containers_sorts_too(context: Context, key: object) -> None:
    _shelves({"name": "b"}, {"name": "a"})
    result = DataList(Shelf)
    result.sort(key=key)  # type: ignore[arg-type]
    assert {shelf.name for shelf in result} == {"a", "b"}
