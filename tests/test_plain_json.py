"""The fast check of list and dict values (``_plain_json``) never admits what ``_not_json`` refuses.

A list or a dict assigned to a property is checked for values JSON gives back unchanged. The
fast check walks exact types without building messages; when it says "plain", the full check
(the model here) must find nothing, whatever the value: odd floats, subclasses of str, int and
dict, tuples, sets, bytes, non-str keys, at any depth.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dal import DataObject, Property
from dal.exceptions import InvalidValueError
from dal.validators import _not_json, _plain_json


class Level(enum.IntEnum):
    LOW = 1


class Tag(str):
    """A str subclass: JSON writes it as a str, so it is admitted, by the full check only."""


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=5),
    st.floats(),  # NaN and infinities included
    st.just(Level.LOW), st.builds(Tag, st.text(max_size=3)),
    st.binary(max_size=3), st.tuples(st.integers()), st.frozensets(st.integers(), max_size=2),
)
keys = st.one_of(st.text(max_size=4), st.integers(), st.booleans(), st.none(),
                 st.builds(Tag, st.text(max_size=2)))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=800, deadline=None)
@given(values)
def test_the_fast_check_admits_only_what_the_full_check_admits(value: Any) -> None:
    if _plain_json(value):
        assert _not_json(value) == ""


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                              st.floats(allow_nan=False, allow_infinity=False)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
                    max_leaves=12))
def test_the_fast_check_admits_every_plain_value(value: Any) -> None:
    # exact JSON types only: the fast path must take them (else it saves nothing)
    assert _plain_json(value)


class PlainJsonHolder(DataObject):
    __properties = [Property("items", list), Property("table", dict)]
    __relations: list[Any] = []
    __dynamics: list[Any] = []


@pytest.mark.parametrize(("field", "value", "said"), [
    ("items", [1, [2, math.inf]], "value[1][1] is inf"),
    ("items", [{"a": b"x"}], "holds a bytes"),
    ("table", {"a": {1: 2}}, "has the key 1"),
    ("table", {"a": (1, 2)}, "holds a tuple"),
])
def test_a_value_the_fast_check_refuses_is_still_refused_with_its_reason(field: str, value: Any,
                                                                         said: str) -> None:
    holder = PlainJsonHolder()
    with pytest.raises(InvalidValueError, match=said.replace("[", r"\[").replace("]", r"\]")):
        setattr(holder, field, value)


def test_subclasses_still_go_through_the_full_check() -> None:
    holder = PlainJsonHolder()
    holder.items = [Level.LOW, Tag("x")]  # not exact types: the full check admits them
    assert holder.items == [1, "x"]
