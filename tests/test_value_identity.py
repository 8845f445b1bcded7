"""One notion of value identity: queries (by index and by scan), cached results, saves and merges agree.

``True``, ``1`` and ``1.0`` are different values at any depth of a list or a dict
(``dal/values.py``); a case-insensitive match folds every string in a container.
"""

from __future__ import annotations

from typing import Any

import pytest
from identity_hybrids import Bag, Typed

from dal import DataList
from dal.config import Context
from dal.exceptions import InvalidQueryError, ObjectNotFoundError

NOWHERE = ("label", "EQUALS", "no such label")  # an OR with it cannot use an index: forces a scan


def _by_index(condition: tuple[Any, ...]) -> set[str]:
    found = DataList(Bag, {"type": "AND", "items": [condition]})
    plan = str(found.explain())
    assert "index lookup" in plan, plan
    return set(found.guids)


def _by_scan(condition: tuple[Any, ...]) -> set[str]:
    found = DataList(Bag, {"type": "OR", "items": [condition, NOWHERE]})
    plan = str(found.explain())
    assert "index lookup" not in plan, plan
    return set(found.guids)


def _bags(**fields: list[Any]) -> dict[str, Bag]:
    made = {}
    for name, values in fields.items():
        bag = Bag(data={"label": name, "tags": values, "meta": {"k": values[0]} if values else {}})
        bag.save()
        made[name] = bag
    return made


@pytest.mark.parametrize(("value", "expected"), [([True], "b"), ([1], "i"), ([1.0], "f"), (["1"], "s")])
def test_true_one_and_one_point_zero_differ_inside_a_list(context: Context, value: list[Any],
                                                          expected: str) -> None:
    bags = _bags(b=[True], i=[1], f=[1.0], s=["1"])
    want = {bags[expected].guid}
    assert _by_index(("tags", "EQUALS", value)) == want
    assert _by_scan(("tags", "EQUALS", value)) == want
    assert set(DataList(Bag, {"type": "AND", "items": [("loose", "EQUALS", [])]}).guids) == \
        {bag.guid for bag in bags.values()}


@pytest.mark.parametrize(("value", "expected"), [({"k": True}, "b"), ({"k": 1}, "i"), ({"k": 1.0}, "f")])
def test_true_one_and_one_point_zero_differ_inside_a_dict(context: Context, value: dict[str, Any],
                                                          expected: str) -> None:
    bags = _bags(b=[True], i=[1], f=[1.0])
    want = {bags[expected].guid}
    assert _by_index(("meta", "EQUALS", value)) == want
    assert _by_scan(("meta", "EQUALS", value)) == want
    assert _by_scan(("meta", "IN", [value, {"k": "none"}])) == want


def test_contains_compares_typed_elements(context: Context) -> None:
    bags = _bags(b=[True, "x"], i=[1, "x"], f=[1.0, "x"])
    for element, expected in ((1, "i"), (True, "b"), (1.0, "f")):
        found = DataList(Bag, {"type": "AND", "items": [("tags", "CONTAINS", element)]})
        assert set(found.guids) == {bags[expected].guid}


def test_a_cached_result_follows_a_write_that_changes_its_typed_membership(context: Context) -> None:
    bags = _bags(i=[1], f=[1.0])
    query = {"type": "OR", "items": [("tags", "EQUALS", [1.0]), NOWHERE]}
    assert set(DataList(Bag, query).guids) == {bags["f"].guid}
    assert set(DataList(Bag, query).guids) == {bags["f"].guid}  # from the result cache, where cached
    bags["i"].tags = [1.0]
    bags["i"].save()
    assert set(DataList(Bag, query).guids) == {bags["f"].guid, bags["i"].guid}


def test_a_case_insensitive_match_on_a_list_scans_and_is_invalidated_by_any_change(context: Context) -> None:
    bags = _bags(lower=["gold"], upper=["GOLD"], other=["ssd"])
    query = {"type": "AND", "items": [("tags", "EQUALS", ["Gold"], False)]}
    found = DataList(Bag, query)
    assert set(found.guids) == {bags["lower"].guid, bags["upper"].guid}
    assert "index lookup" not in str(found.explain())  # index keys are case-sensitive
    assert set(DataList(Bag, query).guids) == {bags["lower"].guid, bags["upper"].guid}
    bags["other"].tags = ["gOLd"]  # becomes a match although no value the query named changed
    bags["other"].save()
    assert set(DataList(Bag, query).guids) == {bag.guid for bag in bags.values()}
    deep = {"type": "AND", "items": [("meta", "EQUALS", {"k": "Gold"}, False)]}
    assert set(DataList(Bag, deep).guids) == {bags["lower"].guid, bags["upper"].guid}


def test_saves_see_the_same_identity(context: Context) -> None:
    bag = _bags(x=[1])["x"]
    bag.tags = [True]  # a different value, although [1] == [True] in Python
    bag.save()
    assert _by_index(("tags", "EQUALS", [True])) == {bag.guid}
    assert _by_index(("tags", "EQUALS", [1])) == set()
    bag.tags = [0.0]
    bag.save()
    stored = Bag(bag.guid)
    stored.tags = [-0.0]  # the same value: nothing to write, and the index still finds it
    revision = stored._revision
    stored.save()
    assert stored._revision == revision
    assert _by_index(("tags", "EQUALS", [-0.0])) == {bag.guid}


def test_contains_on_a_typed_list_queries_like_a_bare_list_with_its_element_type_checked(
        context: Context) -> None:
    first = Typed(data={"names": ["a", "b"], "counts": [1, 2]})
    first.save()
    second = Typed(data={"names": ["B"], "counts": None})
    second.save()
    assert set(DataList(Typed, {"type": "AND", "items": [("names", "CONTAINS", "b")]}).guids) == {first.guid}
    assert set(DataList(Typed, {"type": "AND", "items": [("names", "CONTAINS", "b", False)]}).guids) == \
        {first.guid, second.guid}
    assert set(DataList(Typed, {"type": "AND", "items": [("counts", "CONTAINS", 2)]}).guids) == {first.guid}
    for field, wrong in (("names", 5), ("counts", "2"), ("counts", True)):
        with pytest.raises(InvalidQueryError, match="element"):
            DataList(Typed, {"type": "AND", "items": [(field, "CONTAINS", wrong)]})


# --- lists that ran before their objects were deleted ------------------------------------------------


def test_iteration_skips_objects_deleted_after_the_query_read_them(context: Context) -> None:
    bags = _bags(keep=["k"], gone=["g"])
    scanned = DataList(Bag, {"type": "OR", "items": [("tags", "CONTAINS", "g"), ("tags", "CONTAINS", "k")]})
    assert len(scanned) == 2  # the query ran, reading both documents
    Bag(bags["gone"].guid).delete()
    assert [bag.label for bag in scanned] == ["keep"]
    indexed = DataList(Bag, {"type": "AND", "items": [("tags", "IN", [["k"], ["g2"]])]})
    bags2 = _bags(g2=["g2"])
    assert len(indexed) == 2
    Bag(bags2["g2"].guid).delete()
    assert [bag.label for bag in indexed] == ["keep"]
    again = DataList(Bag, {"type": "OR", "items": [("tags", "CONTAINS", "k"), ("tags", "CONTAINS", "x")]})
    assert again.guids == [bags["keep"].guid]
    Bag(bags["keep"].guid).delete()
    with pytest.raises(ObjectNotFoundError):
        again[0]


def test_a_list_of_given_guids_takes_guids_only(context: Context) -> None:
    from dal.exceptions import InvalidValueError

    with pytest.raises(InvalidValueError, match="must be a guid"):
        DataList(Bag, guids=["../x"])
    assert list(DataList(Bag, guids=["00000000-0000-4000-8000-000000000000"])) == []
