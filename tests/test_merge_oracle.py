"""The merge oracle: two writers of one object, against a brute-force model of the field merge.

Hypothesis draws an object's stored fields, the changes of a writer that saves first ("theirs")
and of one that loaded before that save and saves after it ("ours"), and a ``datastore_wins``.
The stored object afterwards must be what the rule says, field by field, with value identity
written here independently of ``dal.values``: a field only we changed keeps ours, one only they
changed takes theirs, one both changed (even to the same value) follows ``datastore_wins``
(``None``: ConcurrencyError, the store keeps theirs). Values are odd on purpose: containers,
``True``/``1``/``1.0`` apart, ``-0.0``, unicode, ``/``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dal import DataObject, Property, configure
from dal.config import Context
from dal.exceptions import ConcurrencyError

FIELDS = ("a", "b", "c", "d")


class Pair(DataObject, hybrid_name="moracle"):
    """Fields of any JSON value: the merge compares them as stored."""

    __properties: list[Property[Any]] = [Property(name, Any, mandatory=False) for name in FIELDS]


def identity(value: Any) -> Any:
    """A value's identity as the merge rule has it: types count at any depth, -0.0 is 0.0, a dict's
    order does not count."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value + 0.0)
    if isinstance(value, list):
        return ("list", tuple(identity(item) for item in value))
    if isinstance(value, dict):
        return ("dict", frozenset((key, identity(item)) for key, item in value.items()))
    return (type(value).__name__, value)


#: values that look alike and are not (so a merge comparing by == gets them wrong), and some that are
ALIKE = [True, 1, 1.0, "1", False, 0, 0.0, -0.0, None, "", [1], [True], [1.0], [], {"k": 1}, {"k": True},
         {"k": 1, "j": [0]}, {"j": [0], "k": 1}, "a/b", "ß", "SS", "e\u0301", "\u00e9", "\U0001f600",
         2**53 + 1]
VALUES = st.one_of(st.sampled_from(ALIKE), st.recursive(
    st.sampled_from(ALIKE), lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["k", "K", "/", "ß"]), inner, max_size=3)),
    max_leaves=5))
#: dicts of several keys, as stored fields: what a reordered copy can be made of (VALUES seldom draws one)
DICTS = st.dictionaries(st.sampled_from(["k", "K", "/", "ß"]), VALUES, min_size=2, max_size=4)
DOCS = st.fixed_dictionaries({name: st.one_of(DICTS, VALUES) for name in FIELDS})
#: groups of values == takes for one another, which the merge must tell apart
TWINS: list[list[Any]] = [[True, 1, 1.0], [False, 0, 0.0, -0.0], [[1], [True], [1.0]],
                          [{"k": 1}, {"k": True}, {"k": 1.0}]]


def reordered(value: Any) -> list[Any]:
    """Copies of ``value`` with the keys of its dicts in other orders: the same value by the rule.

    Its keys reversed (every dict it holds too) and, past two keys, rotated by one: a merge that
    let a dict's order count would take such a copy for a change.
    """
    def reverse(item: Any) -> Any:
        if isinstance(item, list):
            return [reverse(inner) for inner in item]
        if isinstance(item, dict):
            return {key: reverse(item[key]) for key in reversed(list(item))}
        return item

    copies = [reverse(value)] if isinstance(value, (list, dict)) else []
    if isinstance(value, dict) and len(value) > 2:
        keys = list(value)
        copies.append({key: value[key] for key in keys[1:] + keys[:1]})
    return copies


def twins_of(value: Any) -> list[Any]:
    """Values easily taken for ``value``: those == takes for it (of another type: a change) and
    copies of it in another key order (the same value: no change)."""
    found = (group for group in TWINS if any(identity(value) == identity(twin) for twin in group))
    return reordered(value) + next(found, [value])


@st.composite
def changes(draw: st.DrawFn, original: dict[str, Any]) -> dict[str, Any]:
    """Changes of some fields: any value, or one == takes for the stored one or a reordered copy of
    it (often enough to matter)."""
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=len(FIELDS)))
    return {name: draw(st.one_of(st.sampled_from(twins_of(original[name])), VALUES)) for name in names}


def expected(original: dict[str, Any], theirs: dict[str, Any], ours: dict[str, Any],
             datastore_wins: bool | None) -> dict[str, Any] | None:
    """The merged fields by the rule, or None when it is a conflict with ``datastore_wins=None``."""
    stored = {**original, **theirs}
    result = dict(stored)
    for name, value in ours.items():
        mine = identity(value) != identity(original[name])
        if not mine:
            continue
        both = identity(stored[name]) != identity(original[name])
        if both and datastore_wins is None:
            return None
        if both and datastore_wins:
            continue
        result[name] = value
    return result


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    path: Path = tmp_path_factory.mktemp("merge") / "merge.sqlite3"
    context = configure(f"sqlite:///{path}", "memory://", namespace=f"merge-{uuid.uuid4().hex[:8]}")
    yield context
    context.close()


#: a history: the stored fields, then the changes of the writer that saves first and of the one after it
History = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


@st.composite
def histories(draw: st.DrawFn) -> History:
    original = draw(DOCS)
    return original, draw(changes(original), "theirs"), draw(changes(original), "ours")


def twin_change(before: Any, after: Any, theirs: dict[str, Any] | None = None) -> History:
    """Field ``a`` stored as ``before``, changed by ours to ``after`` (a value == takes for it, nested)."""
    return {"a": before, "b": None, "c": 1, "d": "x"}, theirs or {}, {"a": after}


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), datastore_wins=st.sampled_from([False, True, None]))
# twins inside containers, which a comparison of containers by == takes for no change (drawn, they
# come up only now and then): each of these fails at once when that is so
@example(history=twin_change([1], [True]), datastore_wins=False)
@example(history=twin_change({"k": 1}, {"k": True}), datastore_wins=False)
@example(history=twin_change([1.0], [1]), datastore_wins=False)
@example(history=twin_change({"k": [1]}, {"k": [True]}), datastore_wins=False)
@example(history=twin_change([{"k": 0}], [{"k": False}]), datastore_wins=False)
@example(history=twin_change([1], [2], theirs={"a": [True]}), datastore_wins=None)
def test_a_merge_agrees_with_the_rule(context: Context, history: History,
                                      datastore_wins: bool | None) -> None:
    original, theirs, ours = history
    configure_current(context)
    created = Pair(data=original)
    created.save()
    mine, other = Pair(created.guid), Pair(created.guid)
    for name, value in theirs.items():
        setattr(other, name, value)
    other.save()
    for name, value in ours.items():
        setattr(mine, name, value)
    want = expected(original, theirs, ours, datastore_wins)
    if want is None:
        with pytest.raises(ConcurrencyError):
            mine.save(datastore_wins=datastore_wins)
        want = {**original, **theirs}
    else:
        mine.save(datastore_wins=datastore_wins)
        if any(identity(value) != identity(original[name]) for name, value in ours.items()):
            # a save that wrote holds what it wrote (one with nothing to write is left as it was)
            assert {name: identity(getattr(mine, name)) for name in FIELDS} == {
                name: identity(value) for name, value in want.items()}
    stored = Pair(created.guid)
    assert {name: identity(getattr(stored, name)) for name in FIELDS} == {
        name: identity(value) for name, value in want.items()}


def configure_current(context: Context) -> None:
    """Make ``context`` current again: another test module's fixture may have configured since."""
    import dal.config

    dal.config._context = context


def test_the_model_tells_values_apart_as_the_docs_say() -> None:
    """The oracle's own identity, against docs/model.md's list (so the oracle is not vacuous)."""
    apart = [True, 1, 1.0, "1", [True], [1], [1.0]]
    assert len({identity(value) for value in apart}) == len(apart)
    assert identity(-0.0) == identity(0.0) and identity({"a": 1, "b": 2}) == identity({"b": 2, "a": 1})
    assert not math.isnan(1e300)
