"""The correctness oracle: generated data and queries, every backend's answer against brute force.

Hypothesis builds a small world (sites, kinds, items) and a batch of queries over every
kind of field and operator, nested AND/OR included. Each query's DataList answer must equal
a plain Python filter over the exported objects, written here independently of
``dal.query.grammar``. The queries run twice (the second answer may come from the result cache),
then the world changes (an update, a create, a delete, a relink) and every query must still
agree: cached results never outlive the writes that change them.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import persistent_url_for, volatile_url_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from identity_hybrids import Bag
from query_hybrids import Item, Kind, Site

from dal import DataList, configure
from dal.backends.base import DeletePrefix
from dal.exceptions import InvalidQueryError

PAIRS = [("memory", "memory"), ("sqlite", "memory"), ("etcd", "memcached")]
NAMES = ["disk1", "disk2", "disk10", "Disk2", "vol", "VOL1", ""]
WORDS = ["gold", "GOLD", "silver", "ssd", "prod", "Prod-eu", None]
STATUSES = ["NEW", "RUNNING", "STOPPED"]


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    sites = [{"name": f"site{n}", "region": draw(st.sampled_from(["eu", "us", "EU", None]))}
             for n in range(2)]
    kinds = [{"code": draw(st.sampled_from(["alba", "ceph", "ALBA"])),
              "label": draw(st.sampled_from(["A", "B", None])),
              "site": draw(st.sampled_from([None, 0, 1]))} for _ in range(3)]
    items = draw(st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(NAMES),
        "status": st.sampled_from(STATUSES),
        "size": st.integers(-3, 40),
        "ratio": st.sampled_from([0.0, 0.5, -1.25, 3.0]),
        "tags": st.lists(st.sampled_from([w for w in WORDS if w]), max_size=3),
        "flag": st.booleans(),
        "note": st.sampled_from(WORDS),
        "kind": st.sampled_from([None, 0, 1, 2]),
        "parent": st.sampled_from([None, 0, 1]),
    }), max_size=12))
    return {"sites": sites, "kinds": kinds, "items": items}


def _text_value() -> st.SearchStrategy[Any]:
    return st.sampled_from([*NAMES, *[w for w in WORDS if w], "disk", "o"])


@st.composite
def conditions(draw: st.DrawFn) -> tuple[Any, ...]:
    field = draw(st.sampled_from([
        "name", "status", "size", "ratio", "tags", "flag", "note", "serial", "guid", "kind_guid",
        "kind.code", "kind.label", "kind.site.region", "parent.name", "double"]))
    case = draw(st.sampled_from([(), (), (False,), (True,)]))
    if field in ("name", "note", "kind.code", "kind.label", "kind.site.region", "parent.name"):
        values = _text_value() if field != "kind.site.region" else st.sampled_from(["eu", "us", "EU", "u"])
        nullable = field in ("note", "kind.label", "kind.site.region")
        optional = st.one_of(st.none(), values) if nullable else values
        operator = draw(st.sampled_from(["EQUALS", "NOT_EQUALS", "IN", "CONTAINS", "LT", "GE"]))
        if operator == "IN":
            return (field, operator, draw(st.lists(optional, max_size=3)), *case)
        if operator in ("CONTAINS", "LT", "GE"):
            return (field, operator, draw(values), *case)
        return (field, operator, draw(optional), *case)
    if field == "status":
        operator = draw(st.sampled_from(["EQUALS", "NOT_EQUALS", "IN", "LT"]))
        if operator == "IN":
            return (field, operator, draw(st.lists(st.sampled_from(STATUSES), max_size=3)), *case)
        return (field, operator, draw(st.sampled_from(STATUSES)), *case)
    if field in ("size", "double", "ratio"):
        operator = draw(st.sampled_from(["EQUALS", "NOT_EQUALS", "IN", "LT", "GT", "LE", "GE"]))
        number = st.integers(-4, 82) if field != "ratio" else st.sampled_from([0.0, 0.5, -1.25, 3.0, 1.0])
        if operator == "IN":
            return (field, operator, draw(st.lists(number, max_size=3)))
        if operator in ("LT", "GT", "LE", "GE") and field != "ratio":
            return (field, operator, draw(st.one_of(number, st.sampled_from([0.5, 10.25]))))
        return (field, operator, draw(number))
    if field == "tags":
        operator = draw(st.sampled_from(["CONTAINS", "EQUALS"]))
        if operator == "CONTAINS":
            return (field, operator, draw(st.sampled_from(["gold", "GOLD", "ssd", "x"])), *case)
        return (field, operator, draw(st.lists(st.sampled_from(["gold", "ssd"]), max_size=2)))
    if field == "flag":
        return (field, draw(st.sampled_from(["EQUALS", "NOT_EQUALS", "LT", "GE"])), draw(st.booleans()))
    if field in ("serial", "guid"):
        operator = draw(st.sampled_from(["EQUALS", "IN", "NOT_EQUALS"]))
        ref = st.sampled_from([("@item", n) for n in range(4)] + [("@missing", 0)])
        if operator == "IN":
            return (field, operator, draw(st.lists(ref, max_size=3)))
        return (field, operator, draw(ref))
    operator = draw(st.sampled_from(["EQUALS", "IN", "NOT_EQUALS"]))  # kind_guid
    ref = st.sampled_from([("@kind", n) for n in range(3)] + [None])
    if operator == "IN":
        return (field, operator, draw(st.lists(ref, max_size=3)))
    return (field, operator, draw(ref))


queries = st.recursive(
    st.builds(lambda items, kind: {"type": kind, "items": items},
              st.lists(conditions(), max_size=3), st.sampled_from(["AND", "OR"])),
    lambda inner: st.builds(lambda items, kind: {"type": kind, "items": items},
                            st.lists(st.one_of(conditions(), inner), max_size=3),
                            st.sampled_from(["AND", "OR"])),
    max_leaves=6)

changes = st.lists(st.tuples(st.sampled_from(["status", "size", "note", "tags", "kind", "delete", "create",
                                              "code"]),
                             st.integers(0, 11), st.integers(0, 3)), min_size=1, max_size=3)


# --- brute force ------------------------------------------------------------------------------


def brute_force(query: dict[str, Any], world: dict[str, dict[str, dict[str, Any]]]) -> set[str]:
    return {guid for guid, item in world["item"].items() if _matches(query, item, world)}


def _matches(query: dict[str, Any], item: dict[str, Any], world: dict[str, Any]) -> bool:
    results = [_matches(part, item, world) if isinstance(part, dict) else _holds(part, item, world)
               for part in query["items"]]
    return all(results) if query["type"] == "AND" else any(results)


def _holds(condition: tuple[Any, ...], item: dict[str, Any], world: dict[str, Any]) -> bool:
    field, operator, value = condition[0], condition[1], condition[2]
    sensitive = condition[3] if len(condition) > 3 else True
    record: dict[str, Any] | None = item
    parts = field.split(".")
    for hop in parts[:-1]:
        target = record.get(f"{hop}_guid") if record is not None else None
        record = world[{"kind": "kind", "site": "site", "parent": "item"}[hop]].get(target)
        if record is None:
            return False
    assert record is not None
    actual = record["size"] * 2 if parts[-1] == "double" else record[parts[-1]]
    if not sensitive:
        actual, value = _fold(actual), _fold(value)
    if operator == "EQUALS":
        return _same(actual, value)
    if operator == "NOT_EQUALS":
        return not _same(actual, value)
    if operator == "IN":
        return any(_same(actual, option) for option in value)
    if actual is None:
        return False
    if operator == "CONTAINS":
        return value in actual if isinstance(actual, str) else any(_same(tag, value) for tag in actual)
    return _in_order(operator, actual, value)


def _in_order(operator: str, actual: Any, value: Any) -> bool:
    """LT/GT/LE/GE as dal promises, written out: numbers by value, text with text, booleans among
    booleans only (never against a number: True is not 1), lists element by element as Python
    orders them; any other pair (None, a dict, mixed types) matches nothing."""
    try:
        sign = _order(actual, value)
    except TypeError:
        return False
    return {"LT": sign < 0, "GT": sign > 0, "LE": sign <= 0, "GE": sign >= 0}[operator]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _order(left: Any, right: Any) -> int:
    if isinstance(left, list) and isinstance(right, list):
        for a, b in zip(left, right, strict=False):
            if not _alike(a, b):  # the first unequal elements decide, or else the lengths
                return _order(a, b)
        return (len(left) > len(right)) - (len(left) < len(right))
    if _kind(left) != _kind(right) or _kind(left) not in ("bool", "number", "str"):
        raise TypeError(f"{left!r} and {right!r} have no order")
    return (left > right) - (left < right)


def _alike(left: Any, right: Any) -> bool:
    """Python's == but a boolean never equals a number, at any depth (what decides a list's order)."""
    if _kind(left) != _kind(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(_alike(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_alike(left[key], right[key]) for key in left)
    return bool(left == right)


def _same(left: Any, right: Any) -> bool:
    return _typed_same(left, right)


def _fold(value: Any) -> Any:
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list):
        return [_fold(item) for item in value]
    return value


# --- the test --------------------------------------------------------------------------------


class World:
    """The stored objects, and what the brute force sees of them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.sites = [Site(data={"name": s["name"], "region": s["region"]}) for s in spec["sites"]]
        for site in self.sites:
            site.save()
        self.kinds = []
        for k in spec["kinds"]:
            kind = Kind(data={"code": k["code"], "label": k["label"],
                              "site": None if k["site"] is None else self.sites[k["site"]]})
            kind.save()
            self.kinds.append(kind)
        self.items: list[Item] = []
        for number, row in enumerate(spec["items"]):
            self.create(row, number)

    def create(self, row: dict[str, Any], number: int) -> None:
        parent = self.items[row["parent"]] if row["parent"] is not None and row["parent"] < len(self.items) \
            else None
        item = Item(data={**{k: v for k, v in row.items() if k not in ("kind", "parent")},
                          "kind": None if row["kind"] is None else self.kinds[row["kind"]],
                          "parent": parent, "serial": f"sn{number}-{uuid.uuid4().hex[:6]}"})
        item.save()
        self.items.append(item)

    def resolve(self, value: Any) -> Any:
        """Turn the generated references (``('@item', 2)``) into guids or serials of this world."""
        if isinstance(value, list):
            return [self.resolve(part) for part in value]
        if isinstance(value, tuple) and value and value[0] in ("@item", "@kind", "@missing"):
            kind, number = value
            if kind == "@kind":
                return self.kinds[number].guid
            if kind == "@item" and number < len(self.items):
                return self.items[number].guid
            return "00000000-0000-4000-8000-000000000000"  # a well-formed guid nothing has
        return value

    def bind(self, query: dict[str, Any]) -> dict[str, Any]:
        items: list[Any] = []
        for part in query["items"]:
            if isinstance(part, dict):
                items.append(self.bind(part))
                continue
            value = self.resolve(part[2])
            if part[0] == "serial":
                value = self.serials(value)
            items.append((part[0], part[1], value, *part[3:]))
        return {"type": query["type"], "items": items}

    def serials(self, value: Any) -> Any:
        by_guid = {item.guid: item.serial for item in self.items}
        if isinstance(value, list):
            return [by_guid.get(guid, guid) for guid in value]
        return by_guid.get(value, value)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        def exported(objects: list[Any]) -> dict[str, dict[str, Any]]:
            return {obj.guid: {**obj.export(), "guid": obj.guid,
                               **{f"{name}_guid": getattr(obj, f"{name}_guid")
                                  for name in obj._meta.relations}}
                    for obj in objects}

        return {"site": exported(self.sites), "kind": exported(self.kinds), "item": exported(self.items)}

    def change(self, what: str, index: int, choice: int) -> None:
        if what == "create":
            self.create({"name": NAMES[choice], "status": STATUSES[choice % 3], "size": choice, "ratio": 0.5,
                         "tags": ["gold"] if choice else [], "flag": bool(choice % 2), "note": WORDS[choice],
                         "kind": choice % 3, "parent": None}, len(self.items))
            return
        if what == "code":
            kind = self.kinds[choice % 3]
            kind.code = ["alba", "ceph", "ALBA", "alba"][choice]
            kind.save()
            return
        if not self.items:
            return
        item = self.items[index % len(self.items)]
        if what == "delete":
            item.delete(abandon=["children"])
            self.items.remove(item)
            for other in self.items:  # the brute force must see the unlinked parents too
                other.refresh()
            return
        if what == "status":
            item.status = STATUSES[choice % 3]
        elif what == "size":
            item.size = choice * 7 - 3
        elif what == "note":
            item.note = WORDS[choice]
        elif what == "tags":
            item.tags = [["gold"], ["GOLD", "ssd"], [], ["silver"]][choice]
        else:
            item.kind = None if choice == 3 else self.kinds[choice]
        item.save()


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(pair) for pair in PAIRS])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=worlds(), generated=st.lists(queries, min_size=1, max_size=6), edits=changes)
def test_every_backend_agrees_with_brute_force(pair: tuple[str, str], request: pytest.FixtureRequest,
                                               tmp_path: Path, spec: dict[str, Any],
                                               generated: list[dict[str, Any]],
                                               edits: list[tuple[str, int, int]]) -> None:
    persistent = persistent_url_for(pair[0], request, tmp_path)
    namespace = f"o{uuid.uuid4().hex[:12]}"
    context = configure(persistent, volatile_url_for(pair[1], request), namespace=namespace)
    try:
        world = World(spec)
        bound = [world.bind(query) for query in generated]
        for _ in range(2):  # computed, then (where cacheable) from the result cache
            snapshot = world.snapshot()
            for query in bound:
                assert set(DataList(Item, query).guids) == brute_force(query, snapshot), query
        for what, index, choice in edits:
            world.change(what, index, choice)
            snapshot = world.snapshot()
            for query in bound:
                assert set(DataList(Item, query).guids) == brute_force(query, snapshot), (what, query)
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])


# --- containers: lists and dicts of mixed values, compared by one typed identity, ordered with
# booleans apart from numbers ([True] and [1] neither equal nor ordered) ----------------------------

# few values, so that lists and dicts often hold look-alikes: True and 1 and 1.0, "é" and "É"
SCALARS = st.sampled_from([None, True, False, 0, 1, 0.0, -0.0, 1.0, 2.5, "a", "A", "é", "É", "x/y", ""])
CONTAINED = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(["k", "K", "z"]), inner, max_size=2)),
    max_leaves=4)
LISTS = st.lists(CONTAINED, max_size=3)
DICTS = st.dictionaries(st.sampled_from(["k", "K", "z"]), CONTAINED, max_size=2)


@st.composite
def container_conditions(draw: st.DrawFn) -> tuple[Any, ...]:
    field = draw(st.sampled_from(["tags", "meta", "loose"]))
    case = draw(st.sampled_from([(), (False,), (True,)]))
    # half the time, a look-alike of a stored value (True for 1, 1.0 for 1, "A" for "a"...),
    # resolved against the stored rows when the test runs
    whole = st.one_of(DICTS if field == "meta" else LISTS, st.tuples(st.just("@like"), st.integers(0, 5)))
    ordering = ["LT", "GT", "LE", "GE"]  # dicts never order: those match nothing
    operators = ["EQUALS", "NOT_EQUALS", "IN", *ordering, *([] if field == "meta" else ["CONTAINS"])]
    operator = draw(st.sampled_from(operators))
    if operator == "IN":
        return (field, operator, draw(st.lists(whole, max_size=3)), *case)
    if operator == "CONTAINS":  # sometimes with its lists as tuples: no stored element is one, so refused
        return (field, operator, draw(st.one_of(CONTAINED, CONTAINED.map(_tupled))), *case)
    return (field, operator, draw(whole), *case)


def _tupled(value: Any) -> Any:
    """Turn every list in ``value`` into a tuple, at any depth."""
    if isinstance(value, list):
        return tuple(_tupled(item) for item in value)
    if isinstance(value, dict):
        return {key: _tupled(item) for key, item in value.items()}
    return value


def _holds_tuple(value: Any) -> bool:
    if isinstance(value, tuple):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_holds_tuple(item) for item in items)


_LIKE: dict[Any, Any] = {True: 1, False: 0.0, "a": "A", "é": "É", "A": "a"}


def _look_alike(value: Any) -> Any:
    """Swap bools, ints and floats, and cases, at every depth: equal in Python, never in dal."""
    if isinstance(value, list):
        return [_look_alike(item) for item in value]
    if isinstance(value, dict):
        return {key: _look_alike(item) for key, item in value.items()}
    if isinstance(value, (bool, str)):
        return _LIKE.get(value, value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return bool(value)
    return value


def _bind_looks(query: dict[str, Any], rows: list[tuple[Any, Any, Any]]) -> dict[str, Any]:
    def bind(field: str, value: Any) -> Any:
        if isinstance(value, tuple) and value[:1] == ("@like",):
            if not rows:
                return {} if field == "meta" else []
            row = rows[value[1] % len(rows)]
            return _look_alike(row[{"tags": 0, "meta": 1, "loose": 2}[field]])
        return value

    items = []
    for field, operator, value, *case in query["items"]:
        bound = [bind(field, option) for option in value] if operator == "IN" else bind(field, value)
        items.append((field, operator, bound, *case))
    return {"type": query["type"], "items": items}


container_queries = st.builds(lambda items, kind: {"type": kind, "items": items},
                              st.lists(container_conditions(), min_size=1, max_size=2),
                              st.sampled_from(["AND", "OR"]))


def _typed_same(left: Any, right: Any) -> bool:
    """The identity dal promises, written out independently: types at any depth, -0.0 == 0.0."""
    if type(left) is not type(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(_typed_same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_typed_same(left[key], right[key]) for key in left)
    return bool(left == right)


def _deep_fold(value: Any) -> Any:
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list):
        return [_deep_fold(item) for item in value]
    if isinstance(value, dict):
        return {key: _deep_fold(item) for key, item in value.items()}
    return value


def _container_holds(condition: tuple[Any, ...], bag: dict[str, Any]) -> bool:
    field, operator, value = condition[0], condition[1], condition[2]
    actual = bag[field]
    if len(condition) > 3 and not condition[3]:
        actual, value = _deep_fold(actual), _deep_fold(value)
    if operator == "EQUALS":
        return _typed_same(actual, value)
    if operator == "NOT_EQUALS":
        return not _typed_same(actual, value)
    if operator == "IN":
        return any(_typed_same(actual, option) for option in value)
    if operator != "CONTAINS":
        return _in_order(operator, actual, value)
    return any(_typed_same(element, value) for element in actual)


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(pair) for pair in PAIRS])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(LISTS, DICTS, LISTS), max_size=6),
       generated=st.lists(container_queries, min_size=1, max_size=4),
       edits=st.lists(st.tuples(st.integers(0, 5), LISTS, DICTS), min_size=1, max_size=3))
def test_container_values_agree_with_brute_force(pair: tuple[str, str], request: pytest.FixtureRequest,
                                                 tmp_path: Path, rows: list[tuple[Any, Any, Any]],
                                                 generated: list[dict[str, Any]],
                                                 edits: list[tuple[int, Any, Any]]) -> None:
    persistent = persistent_url_for(pair[0], request, tmp_path)
    context = configure(persistent, volatile_url_for(pair[1], request), namespace=f"o{uuid.uuid4().hex[:12]}")
    try:
        bags = []
        for number, (tags, meta, loose) in enumerate(rows):
            bag = Bag(data={"label": f"b{number}", "tags": tags, "meta": meta, "loose": loose})
            bag.save()
            bags.append(bag)

        def truth(query: dict[str, Any]) -> set[str]:
            results = {bag.guid: [_container_holds(condition, {"tags": bag.tags, "meta": bag.meta,
                                                                "loose": bag.loose})
                                  for condition in query["items"]] for bag in bags}
            combine = all if query["type"] == "AND" else any
            return {guid for guid, held in results.items() if combine(held)}

        generated = [_bind_looks(query, rows) for query in generated]
        refused = [query for query in generated if any(
            operator == "CONTAINS" and _holds_tuple(value) for _, operator, value, *_ in query["items"])]
        for query in refused:  # a tuple is never a stored element, nor cached as the list it dumps as
            with pytest.raises(InvalidQueryError, match="compare with a list"):
                DataList(Bag, query)
        generated = [query for query in generated if query not in refused]
        for _ in range(2):  # computed, then (where cacheable) from the result cache
            for query in generated:
                assert set(DataList(Bag, query).guids) == truth(query), query
        for index, tags, meta in edits:
            if bags:
                bag = bags[index % len(bags)]
                bag.tags, bag.meta = tags, meta
                bag.save()
            for query in generated:
                assert set(DataList(Bag, query).guids) == truth(query), (index, tags, meta, query)
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
