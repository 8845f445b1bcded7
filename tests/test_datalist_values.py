"""DataList with typed values and odd uses: Decimals and timedeltas ordered by value (by the ordering
operators and by ``sort()``), tuples sorted without raising, ``serialize()`` with a related object
deleted meanwhile, a list used under another ``configure()``, and typed errors for bad arguments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from conftest import PairURLs

from dal import DataList, DataObject, Property, Relation, configure
from dal.config import Context
from dal.exceptions import ConfigurationError, InvalidQueryError, InvalidValueError
from dal.query.filters import predicate
from dal.query.grammar import Condition, compile_query, satisfies
from dal.query.ordering import sortable


class Priced(DataObject, hybrid_name="dlvpriced"):
    """Holds types pydantic stores as text that orders unlike their values."""

    __properties: list[Property[Any]] = [Property("name", str),
                                         Property("price", Decimal, mandatory=False),
                                         Property("took", dt.timedelta, mandatory=False),
                                         Property("coords", tuple[int, int], mandatory=False)]


class Holder(DataObject, hybrid_name="dlvholder"):
    __properties: list[Property[Any]] = [Property("name", str)]


class Held(DataObject, hybrid_name="dlvheld"):
    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("holder", Holder, "held", mandatory=False),
                   Relation("buddy", "Held", "buddies", mandatory=False)]


PRICED = [("a", "9", 9), ("b", "10", 10), ("c", "-1", 100), ("d", "2.5", 2)]


def _priced() -> None:
    for name, price, seconds in PRICED:
        Priced(data={"name": name, "price": Decimal(price), "took": dt.timedelta(seconds=seconds)}).save()


def _names(result: DataList[Any]) -> list[str]:
    return sorted(obj.name for obj in result)


# --- the ordering operators compare values, not stored text ------------------------------------


def test_ordering_operators_compare_decimals_by_value(context: Context) -> None:
    _priced()
    assert _names(DataList(Priced, {"items": [("price", "GT", Decimal("5"))]})) == ["a", "b"]
    assert _names(DataList(Priced, {"items": [("price", "LE", Decimal("2.5"))]})) == ["c", "d"]
    assert _names(DataList(Priced, {"items": [("price", "LT", Decimal("-0.5"))]})) == ["c"]


def test_ordering_operators_compare_timedeltas_by_length(context: Context) -> None:
    _priced()
    assert _names(DataList(Priced, {"items": [("took", "GT", dt.timedelta(seconds=5))]})) == ["a", "b", "c"]
    assert _names(DataList(Priced, {"items": [("took", "LT", dt.timedelta(seconds=10))]})) == ["a", "d"]


@pytest.mark.parametrize(("field", "bound", "stored", "over"), [
    ("price", Decimal("5"), ["10", "9", "-1", "1E+3", "0.5", "not a number", "NaN", 10, None],
     ["10", "9", "1E+3"]),
    ("took", dt.timedelta(seconds=5),
     ["PT10S", "PT9S", "PT100S", "-P1DT5S", "P1D", "PT0.5S", "nope", 10, None],
     ["PT10S", "PT9S", "PT100S", "P1D"]),
])
def test_filters_order_typed_values_as_the_tree_walk_does(field: str, bound: Any, stored: list[Any],
                                                          over: list[Any]) -> None:
    """The per-document filter and ``satisfies`` (dotted paths, dynamics) give one answer for any stored
    value, data of an older model included; neither raises."""
    for operator in ("LT", "GT", "LE", "GE"):
        condition = compile_query(Priced._meta, {"items": [(field, operator, bound)]}).items[0]
        assert isinstance(condition, Condition)
        test = predicate(condition)
        for value in stored:
            assert test(value) == satisfies(condition, value), (operator, value)
    greater = compile_query(Priced._meta, {"items": [(field, "GT", bound)]}).items[0]
    assert isinstance(greater, Condition)
    assert [value for value in stored if satisfies(greater, value)] == over


# --- sorting ------------------------------------------------------------------------------------


def test_sort_ranks_decimals_with_numbers_and_timedeltas_by_length(context: Context) -> None:
    _priced()
    result = DataList(Priced)
    result.sort(key="price")
    assert [str(obj.price) for obj in result] == ["-1", "2.5", "9", "10"]
    result.sort(key="took")
    assert [obj.took.total_seconds() for obj in result] == [2, 9, 10, 100]
    values = [Decimal("10"), 9, 2.5, Decimal("NaN"), float("nan"), Decimal("sNaN"), Decimal("-1"), 10**400]
    ordered = sorted(values, key=sortable)
    assert ordered[:5] == [Decimal("-1"), 2.5, 9, Decimal("10"), 10**400]


def test_sort_on_a_tuple_property_with_an_unset_value_never_raises(context: Context) -> None:
    Priced(data={"name": "x", "coords": (1, 10)}).save()
    Priced(data={"name": "y"}).save()
    Priced(data={"name": "z", "coords": (1, 2)}).save()
    result = DataList(Priced)
    result.sort(key="coords")
    assert [obj.name for obj in result] == ["y", "z", "x"]  # unset first, then element by element
    result.sort(key=["coords", "name"], reverse=True)
    assert [obj.name for obj in result] == ["x", "z", "y"]
    result.sort(key=lambda obj: obj.coords)
    assert [obj.name for obj in result] == ["y", "z", "x"]


# --- serialize with a related object deleted meanwhile -------------------------------------------


def test_serialize_gives_none_for_a_related_object_deleted_since_the_list_loaded(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = Holder(data={"name": "h"})
    holder.save()
    for index in range(3):
        Held(data={"name": f"c{index}", "holder": holder}).save()
    real = Held.serialize
    deleted: list[bool] = []

    def racing(self: Held, depth: int = 0) -> dict[str, Any]:
        if not deleted:  # after the list loaded its objects, before their relations load
            deleted.append(True)
            Holder(holder.guid).delete(abandon=["held"])
        return real(self, depth)

    monkeypatch.setattr(Held, "serialize", racing)
    assert [item["holder"] for item in DataList(Held).serialize(1)] == [None, None, None]


# --- a list used under another configure() --------------------------------------------------------


def test_a_list_run_under_another_store_is_refused_and_the_same_store_again_is_not(
        context: Context, pair_urls: PairURLs) -> None:
    for index in range(3):
        Held(data={"name": f"c{index}"}).save()
    result = DataList(Held)
    assert len(result) == 3
    piece = result[0:2]
    pair_urls.configure()
    assert len(result) == 3 and len(list(result)) == 3 and result[0] is not None  # the same store
    configure(pair_urls.persistent, pair_urls.volatile, namespace=pair_urls.namespace + "-other")
    for use in (len, list, lambda lst: lst[0], lambda lst: lst.page(1, 2), lambda lst: lst.first(),
                lambda lst: lst.guids):
        with pytest.raises(ConfigurationError, match="another configure"):
            use(result)
    with pytest.raises(ConfigurationError):
        len(piece)  # a slice holds the same store's guids
    assert len(DataList(Held)) == 0  # a new list runs under the current configuration


# --- typed errors ---------------------------------------------------------------------------------


def test_bad_arguments_raise_typed_errors(context: Context) -> None:
    first = Held(data={"name": "a"})
    first.save()
    result = DataList(Held)
    for absent in (None, "x", 3):
        with pytest.raises(ValueError, match="not in this DataList"):
            result.index(absent)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not in this DataList"):
            result.remove(absent)  # type: ignore[arg-type]
    for key in (3, object(), b"name"):
        with pytest.raises(InvalidQueryError, match="sort"):
            result.sort(key=key)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError, match="reverse"):
        result.sort(reverse="yes")  # type: ignore[arg-type]
    for depth in ("1", True, -1, 101, 2000, 1.0):
        with pytest.raises(InvalidValueError, match="depth"):
            result.serialize(depth)  # type: ignore[arg-type]
        with pytest.raises(InvalidValueError, match="depth"):
            first.serialize(depth)  # type: ignore[arg-type]
        with pytest.raises(InvalidValueError, match="depth"):
            DataList(Held, guids=[]).serialize(depth)  # type: ignore[arg-type]


def test_serialize_to_the_deepest_depth_through_a_self_link(context: Context) -> None:
    loop = Held(data={"name": "loop"})
    loop.save()
    loop.buddy = loop
    loop.save()
    nested = DataList(Held).serialize(100)[0]
    for _ in range(100):
        nested = nested["buddy"]
    assert nested["guid"] == loop.guid and nested["buddy_guid"] == loop.guid
