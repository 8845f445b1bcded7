"""Typed values are stored in one form and checked wherever they can change.

- A set (or frozenset, at any depth) is stored as a list sorted by ``canonical``: its iteration
  order differs per process (hash seed) and per insertion order, and a list is compared in
  order, so an unsorted set made an object that was only loaded look changed (its save undid
  another writer's change) and let two objects hold one unique set.
- A typed container (list[float], dict[str, int], a pydantic model) changed in place is
  validated again at save, before anything is written, like a plain list or dict is.
- An int with more digits than Python writes as text is refused when assigned (it could be
  neither keyed nor read back).
- An enum of lists or dicts compares its allowed values by type too: [True, 2.0] is not [1, 2].
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pydantic.dataclasses
import pytest

from dal import DataObject, Property, TypedObject
from dal.backends.base import Delete, Put, Revision
from dal.config import Context
from dal.exceptions import InvalidQueryError, InvalidValueError, UniqueConstraintError
from dal.objects.transaction import decode, encode
from dal.validators import Validator

NAMES = [f"user{i}" for i in range(200)]  # enough for two insertion orders to iterate differently


class Cfg(pydantic.BaseModel):
    size: int = 1
    tags: frozenset[str] = frozenset()


class AliasedCfg(pydantic.BaseModel):
    """A model that writes its fields by alias, as camelCase APIs do."""

    model_config = pydantic.ConfigDict(serialize_by_alias=True, populate_by_name=True)
    tags: frozenset[str] = pydantic.Field(default=frozenset(), alias="Tags")


@pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(serialize_by_alias=True, populate_by_name=True))
class AliasedData:
    """A pydantic dataclass that writes its field by alias."""

    tags: frozenset[str] = pydantic.Field(default=frozenset(), alias="t")


class Team(TypedObject, hybrid_name="typedteam"):
    name: str = Property()
    members: set[str] = Property(default=set())
    roles: frozenset[str] | None = Property(mandatory=False, unique=True)


class Box(TypedObject, hybrid_name="typedbox"):
    vals: list[float] = Property(default=[])
    counts: dict[str, int] = Property(default={})
    cfg: Cfg | None = Property(mandatory=False)


class Num(TypedObject, hybrid_name="typednum"):
    i: int | None = Property(mandatory=False, unique=True)
    items: list | None = Property(mandatory=False)
    meta: dict | None = Property(mandatory=False)


class Shape(DataObject):
    __properties = [Property("dims", [[1, 2], [3]], mandatory=False, indexed=True),
                    Property("opts", [{"a": 1}], mandatory=False)]


def _stored(context: Context, hybrid: str, guid: str) -> tuple[int, dict[str, Any]]:
    entry = context.persistent.get(context.keys.doc(hybrid, guid))
    assert entry is not None
    return entry.revision, decode(entry.value)


# sets: one stored form ------------------------------------------------------------------------------

_SEEDED = """
import json, sys
from dal.validators import Validator
names = [f"user{i}" for i in range(200)]
print(json.dumps([Validator("T.s", set[str]).to_json(set(names)),
                  Validator("T.d", dict[str, frozenset[int]]).to_json({"a": frozenset(range(0, 400, 7))})]))
"""


def test_a_set_is_stored_in_one_order_whatever_the_hash_seed(tmp_path: Path) -> None:
    forms = [subprocess.run([sys.executable, "-c", _SEEDED], env={**os.environ, "PYTHONHASHSEED": seed},
                            cwd=tmp_path, check=True, capture_output=True, text=True).stdout
             for seed in ("1", "2")]
    assert forms[0] == forms[1]
    assert json.loads(forms[0])[0] == sorted(NAMES)


@pytest.mark.parametrize(("declared", "build"), [
    (set[str], lambda order: set(order)),
    (frozenset[str] | None, lambda order: frozenset(order)),
    (list[set[str]], lambda order: [set(order), {name for name in order if "7" in name}]),
    (dict[int, frozenset[str]], lambda order: {1: frozenset(order)}),
    (frozenset[frozenset[str]],
     lambda order: frozenset(frozenset(n for n in order if n.endswith(d)) for d in "0123456789")),
    (Cfg, lambda order: Cfg(tags=frozenset(order))),
    (list[Cfg], lambda order: [Cfg(tags=frozenset(order))]),
    (AliasedCfg, lambda order: AliasedCfg(tags=frozenset(order))),
    (AliasedData, lambda order: AliasedData(tags=frozenset(order))),
], ids=["set", "optional-frozenset", "list-of-sets", "dict-of-frozensets", "set-of-sets", "model",
        "list-of-models", "model-by-alias", "dataclass-by-alias"])
def test_one_set_built_in_two_orders_has_one_stored_form(declared: Any,
                                                        build: Callable[[list[str]], Any]) -> None:
    validator = Validator("T.s", declared)
    forward, backward = validator(build(NAMES)), validator(build(NAMES[::-1]))
    assert validator.to_json(forward) == validator.to_json(backward)
    assert validator.from_json(validator.to_json(backward)) == forward  # still reads back as itself


def test_a_loaded_set_is_no_change_and_another_writers_change_is_kept(local: Context) -> None:
    team = Team(name="t", members=set(NAMES))
    team.save()
    ours, theirs = Team(team.guid), Team(team.guid)
    ours.members = set(NAMES[::-1])  # the same set, iterated as another process may iterate it
    theirs.members = theirs.members | {"newcomer"}
    theirs.save()
    ours.name = "renamed"
    ours.save()  # members is unchanged here: theirs must survive
    final = Team(team.guid)
    assert (final.name, "newcomer" in final.members) == ("renamed", True)
    revision, _ = _stored(local, "typedteam", team.guid)
    final.members = set(sorted(final.members, reverse=True))
    final.save()  # nothing changed: nothing written
    assert _stored(local, "typedteam", team.guid)[0] == revision


def test_a_unique_set_is_one_value_in_any_insertion_order(local: Context) -> None:
    first = Team(name="x", roles=frozenset(NAMES))
    first.save()
    with pytest.raises(UniqueConstraintError, match=r"Team\.roles must be unique"):
        Team(name="y", roles=frozenset(NAMES[::-1])).save()
    assert Team.get_by(roles=frozenset(sorted(NAMES, key=len))).guid == first.guid


# typed containers changed in place ------------------------------------------------------------------

IN_PLACE: dict[str, tuple[str, Callable[[Box], None]]] = {
    "nan in a list[float]": ("vals", lambda box: box.vals.append(math.nan)),
    "a str in a list[float]": ("vals", lambda box: box.vals.append("x")),
    "a str in a dict[str, int]": ("counts", lambda box: box.counts.update(n="seven")),
    "a str in a model's int": ("cfg", lambda box: setattr(box.cfg, "size", "big")),
    "infinity in a model's int": ("cfg", lambda box: setattr(box.cfg, "size", math.inf)),
    "an object in a model's int": ("cfg", lambda box: setattr(box.cfg, "size", object())),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic warns as it writes a value its type refuses
@pytest.mark.parametrize("case", IN_PLACE, ids=list(IN_PLACE))
def test_a_typed_value_changed_in_place_is_refused_at_save_and_nothing_is_written(
        local: Context, case: str) -> None:
    field, change = IN_PLACE[case]
    box = Box(vals=[1.5], counts={"a": 1}, cfg=Cfg())
    box.save()
    before = _stored(local, "typedbox", box.guid)
    change(box)
    with pytest.raises(InvalidValueError, match=rf"Box {box.guid}: Box\.{field} .*changed in place"):
        box.save()
    assert _stored(local, "typedbox", box.guid) == before
    again = Box(box.guid)  # still loads, as it was
    assert (again.vals, again.counts, again.cfg) == ([1.5], {"a": 1}, Cfg())


def test_a_valid_typed_change_in_place_is_saved(local: Context) -> None:
    box = Box(vals=[1.5], cfg=Cfg())
    box.save()
    box.vals.append(2.5)
    assert box.cfg is not None
    box.cfg.size = 3
    box.save()
    again = Box(box.guid)
    assert (again.vals, again.cfg) == ([1.5, 2.5], Cfg(size=3))


# ints too long to write as text ---------------------------------------------------------------------

HUGE = 10 ** 5000


@pytest.mark.parametrize(("field", "value"), [("i", HUGE), ("i", -HUGE), ("items", [1, HUGE]),
                                              ("meta", {"a": {"b": [HUGE]}})],
                         ids=["int", "negative", "in-a-list", "deep-in-a-dict"])
def test_an_int_too_long_to_write_is_refused_when_assigned(field: str, value: Any) -> None:
    with pytest.raises(InvalidValueError, match=rf"Num\.{field} cannot hold .*about 5000 digits.*as a str"):
        Num(**{field: value})


def test_an_int_too_long_to_write_is_refused_in_a_model_and_by_get_by(local: Context) -> None:
    with pytest.raises(InvalidValueError, match="about 5000 digits"):
        Validator("T.cfg", Cfg)(Cfg(size=HUGE))
    with pytest.raises(InvalidQueryError, match=r"get_by\(i=\.\.\.\).*about 5000 digits"):
        Num.get_by(i=HUGE)


def test_a_long_int_python_still_writes_is_stored(local: Context) -> None:
    big = 10 ** 4250  # more bits than the cheap check passes (14000), fewer digits than the limit (4300)
    num = Num(i=big, items=[big])
    num.save()
    assert (Num.get_by(i=big).guid, Num(num.guid).items) == (num.guid, [big])


# enums of lists and dicts ---------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [("dims", [True, 2.0]), ("dims", [1.0, 2]), ("dims", [1, True]),
                                              ("dims", (1, 2)), ("dims", [1, 2, 3]), ("opts", {"a": True}),
                                              ("opts", {"a": 1.0}), ("dims", [[1], 2])])
def test_an_enum_of_lists_or_dicts_admits_its_typed_values_only(field: str, value: Any) -> None:
    with pytest.raises(InvalidValueError, match=rf"Shape\.{field} must be one of"):
        Shape(data={field: value})


def test_an_enum_of_lists_admits_and_finds_its_values(local: Context) -> None:
    shape = Shape(data={"dims": [1, 2], "opts": {"a": 1}})
    shape.save()
    assert (Shape.where(Shape.dims == [1, 2]).count(), Shape(shape.guid).opts) == (1, {"a": 1})


def test_a_set_stored_unsorted_by_an_earlier_version_is_rewritten_sorted_by_the_next_save(
        local: Context) -> None:
    """Its unique key moves with it: a new object holding the same set is refused."""
    old = Team(name="old", roles=frozenset({"a", "b"}))
    old.save()
    keys, key = local.keys, local.keys.doc("typedteam", old.guid)
    revision, document = _stored(local, "typedteam", old.guid)
    sorted_key = keys.unique("typedteam", "roles", ["a", "b"])
    legacy_key = keys.unique("typedteam", "roles", ["b", "a"])
    assert local.persistent.commit([Revision(key, revision)], [  # as an earlier version wrote it
        Put(key, encode({**document, "roles": ["b", "a"]})), Delete(sorted_key),
        Put(legacy_key, old.guid.encode())]).ok
    renamed = Team(old.guid)
    renamed.name = "renamed"
    renamed.save()
    assert _stored(local, "typedteam", old.guid)[1]["roles"] == ["a", "b"]
    assert local.persistent.get(legacy_key) is None and local.persistent.get(sorted_key) is not None
    with pytest.raises(UniqueConstraintError):
        Team(name="dup", roles=frozenset({"b", "a"})).save()
