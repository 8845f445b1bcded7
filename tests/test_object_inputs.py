"""Bad input to an object gets a typed error that says what to do, never a bare TypeError or bad data.

A list or dict changed in place bypasses validation at assignment, so the save checks it: NaN
and infinities (JSON cannot hold them) and values that would read back as something else (a
non-str key, a tuple) are refused, and nothing is written. A str UTF-8 cannot encode (a lone
surrogate) is refused when assigned, not later at the save.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from query_hybrids import Item, Kind

from dal import DataObject, Dynamic, Property, save_many
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.objects.transaction import encode


class InputBag(DataObject):
    __properties = [Property("name", str, mandatory=False), Property("tags", list, mandatory=False),
                    Property("meta", dict, mandatory=False)]
    __dynamics = [Dynamic("size", int, 5)]

    def _size(self) -> int:
        return len(self.tags or [])


def _stored(context: Context, bag: InputBag) -> dict[str, Any] | None:
    entry = context.persistent.get(context.keys.doc("inputbag", bag.guid))
    return None if entry is None else dict(json.loads(entry.value))


IN_PLACE: dict[str, Callable[[InputBag], None]] = {
    "nan in a list": lambda bag: bag.tags.append(math.nan),
    "infinity deep in a dict": lambda bag: bag.meta.setdefault("deep", {}).update(x=[math.inf]),
    "an int key": lambda bag: bag.meta.update({1: "one"}),
    "a tuple": lambda bag: bag.tags.append((1, 2)),
    "a lone surrogate": lambda bag: bag.tags.append("a\ud800"),
}


@pytest.mark.parametrize("change", IN_PLACE.values(), ids=IN_PLACE.keys())
def test_a_list_or_dict_changed_in_place_into_no_json_is_refused_at_save(
        local: Context, change: Callable[[InputBag], None]) -> None:
    bag = InputBag(data={"tags": ["a"], "meta": {"k": 1}})
    bag.save()
    change(bag)
    with pytest.raises(InvalidValueError, match="changed in place"):
        bag.save()
    assert _stored(local, bag) == {"name": None, "tags": ["a"], "meta": {"k": 1}}  # nothing written


@pytest.mark.parametrize("change", IN_PLACE.values(), ids=IN_PLACE.keys())
def test_a_new_object_whose_list_or_dict_was_changed_in_place_is_refused(
        local: Context, change: Callable[[InputBag], None]) -> None:
    bag = InputBag(data={"tags": [], "meta": {}})
    change(bag)
    with pytest.raises(InvalidValueError, match="changed in place"):
        bag.save()
    assert _stored(local, bag) is None


def test_mixed_keys_changed_in_place_are_refused_naming_the_field(local: Context) -> None:
    bag = InputBag(data={"meta": {"y": 2}})
    bag.save()
    bag.meta[1] = "x"  # sorting the keys to compare them fails: the error still names the field
    with pytest.raises(InvalidValueError, match=r"meta has the key 1; JSON object keys are strings"):
        bag.save()


def test_a_document_holding_nan_is_never_encoded() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode({"x": [math.nan]})


@pytest.mark.parametrize("value", ["a\ud800b", ["ok", "\udc80"], {"k\udc80": 1}, {"k": {"v": "\ud83d"}}])
def test_a_lone_surrogate_is_refused_at_assignment(value: Any) -> None:
    bag = InputBag()
    field = "name" if isinstance(value, str) else "tags" if isinstance(value, list) else "meta"
    with pytest.raises(InvalidValueError, match="lone surrogate") as raised:
        setattr(bag, field, value)
    assert "errors='replace'" in str(raised.value)
    assert getattr(bag, field) is None


def test_text_that_utf8_encodes_is_still_accepted() -> None:
    bag = InputBag(data={"name": "h\u00e9llo \U0001f600", "meta": {"\u00e9": ["\u4e2d"]}})
    assert bag.name == "h\u00e9llo \U0001f600" and bag.meta == {"\u00e9": ["\u4e2d"]}


@pytest.mark.parametrize("label", ["timeout", "lock_timeout"])
@pytest.mark.parametrize("seconds", [math.nan, math.inf, 1e12, 10 ** 400])
def test_a_dynamic_refuses_a_timeout_that_is_not_finite_or_beyond_1e12(label: str, seconds: float) -> None:
    with pytest.raises(InvalidValueError, match=f"{label} must be a number of seconds .* and below 1e12"):
        Dynamic("x", int, **{"timeout": 5, label: seconds})  # type: ignore[arg-type]


def test_get_none_is_refused_rather_than_making_a_new_object(local: Context) -> None:
    with pytest.raises(InvalidValueError, match=r"InputBag.get\(guid\) must be a guid, not None"):
        InputBag.get(None)  # type: ignore[arg-type]


def test_data_must_be_a_mapping() -> None:
    with pytest.raises(InvalidValueError, match=r"takes a mapping .* not a list; pass data=dict"):
        InputBag(data=[("name", "x")])  # type: ignore[arg-type]


def test_unknown_names_of_several_types_are_listed() -> None:
    with pytest.raises(InvalidValueError, match=r"no property or relation 'y', 1; known: meta, name, tags"):
        InputBag(data={1: "x", "y": 2})  # type: ignore[dict-item]


def test_data_giving_a_relation_both_as_an_object_and_as_its_guid_is_refused() -> None:
    """Assigned one after the other, the last of the two used to win (another kind than the object given,
    by their order in the dict); refused even when they agree: one form of a link is enough."""
    kind, other = Kind(code="a"), Kind(code="b")
    both = [{"kind": kind, "kind_guid": other.guid}, {"kind_guid": other.guid, "kind": kind},
            {"kind": kind, "kind_guid": kind.guid}]
    for given in both:
        with pytest.raises(InvalidValueError, match=r"Item\(\.\.\.\) is given both kind and kind_guid: two "
                                                    r"forms of one link; give one of them \(kind=the object"):
            Item(data={"name": "i", **given})
    with pytest.raises(InvalidValueError, match="is given both kind and kind_guid"):
        Item(name="i", kind=kind, kind_guid=other.guid)
    with pytest.raises(InvalidValueError, match="is given both kind and kind_guid"):
        Item(data={"name": "i", "kind": kind}, kind_guid=other.guid)
    assert Item(name="i", kind=kind).kind is kind
    assert Item(name="i", kind_guid=other.guid).kind_guid == other.guid


@pytest.mark.parametrize("names", [[1], ["size", None]])
def test_invalidate_dynamics_refuses_names_that_are_no_str(local: Context, names: list[Any]) -> None:
    bag = InputBag()
    bag.save()
    with pytest.raises(InvalidValueError, match=r"InputBag has no dynamic (1|None); known: size"):
        bag.invalidate_dynamics(names)


@pytest.mark.parametrize("wins", ["False", 0, 1, "yes"])
def test_datastore_wins_is_false_true_or_none(local: Context, wins: Any) -> None:
    """Another value would be taken for one of them, and a merge keep the wrong side."""
    bag = InputBag()
    with pytest.raises(InvalidValueError, match="datastore_wins is False"):
        bag.save(datastore_wins=wins)
    with pytest.raises(InvalidValueError, match="datastore_wins is False"):
        save_many([bag], datastore_wins=wins)
    assert bag._raw is None  # nothing was saved


@pytest.mark.parametrize("objects", ["x", None, 3, {"a": 1}], ids=["str", "none", "int", "dict"])
def test_save_many_takes_a_list_of_objects(local: Context, objects: Any) -> None:
    with pytest.raises(InvalidValueError, match=r"save_many\(\) takes a list of objects"):
        save_many(objects)


def test_save_many_refuses_a_list_holding_something_else_before_saving_any(local: Context) -> None:
    first = InputBag()
    with pytest.raises(InvalidValueError, match="item 1 is 'x'; nothing was saved"):
        save_many([first, "x", InputBag()])
    assert first._raw is None
    with pytest.raises(InvalidValueError, match=r"pass \[obj\] to save one"):
        save_many(first)  # type: ignore[arg-type]
