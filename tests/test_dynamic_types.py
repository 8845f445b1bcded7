"""A cached dynamic is served only to a reader whose class declares the type it was computed for.

During a rolling deploy, processes of two versions of a model share one cache: one declares
``Dynamic('reading', int, 600)``, the next ``str`` (or a list, a datetime, allowed values). A value
cached by one is a miss to the other (computed again, and replaced), never served as the wrong type,
converted, outside the allowed values, or a pydantic error. See docs/dynamics.md.
"""

from __future__ import annotations

import datetime
import enum
import functools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pytest
from conftest import volatile_url_for
from pydantic import Field

from dal import DataObject, Dynamic, Property, configure
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.validators import Validator

UTC = datetime.timezone.utc


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


#: loader calls in this process, by hybrid name
CALLS: Counter[str] = Counter()



def model(declared: Any, value: Any, *, locked: bool = False) -> type[DataObject]:
    """A hybrid of its own whose dynamic ``reading`` is declared ``declared`` and computes ``value``."""
    hybrid = f"typed{uuid.uuid4().hex[:10]}"

    class Model(DataObject, hybrid_name=hybrid):
        __properties: list[Property[Any]] = [Property("name", str, default="m")]
        __dynamics = [Dynamic("reading", declared, 60, locked=locked, lock_timeout=5)]

        def _reading(self) -> Any:
            CALLS[hybrid] += 1
            return value

    return Model


def key_of(context: Context, obj: DataObject) -> str:
    return context.keys.cached_dynamic(obj._meta.name, obj.guid, "reading")


def cached_by(context: Context, declared: Any, value: Any) -> bytes:
    """Return the payload an object of a model declaring ``declared`` caches: a deploy's other version."""
    old = model(declared, value)()
    old.save()
    assert old.reading == value  # type: ignore[attr-defined]
    payload = context.dynamics.get(key_of(context, old))
    assert payload is not None
    return payload


def under_new_model(context: Context, declared: Any, value: Any) -> DataObject:
    new = model(declared, value)()
    new.save()  # before the old one: the entry is of a revision at least this object's
    return new


#: (declared before, its value, declared after, its value): each change of type the deploy makes
CHANGES = [
    pytest.param(int, 5, str, "five", id="int-to-str"),
    pytest.param(str, "five", ["UP", "DOWN"], "UP", id="str-to-allowed-values"),
    pytest.param(str, "five", list[int], [1], id="str-to-list-of-int"),
    pytest.param(int, 5, datetime.datetime, datetime.datetime(2020, 1, 1, tzinfo=UTC), id="int-to-datetime"),
    pytest.param(int, 5, float, 2.5, id="int-to-float"),
    pytest.param(list[int], [1], list[str], ["a"], id="list-of-int-to-list-of-str"),
    pytest.param(["UP", "DOWN"], "UP", ["OK", "KO"], "OK", id="allowed-values-changed"),
    # both admit a number or a string; a Decimal is written as a string, which float | str read as a str
    pytest.param(Decimal, Decimal("1.5"), float | str, 1.5, id="decimal-to-float-or-str"),
    pytest.param(float | str, 2.5, Decimal, Decimal("1.5"), id="float-or-str-to-decimal"),
]


@pytest.mark.parametrize(("before", "old_value", "after", "new_value"), CHANGES)
def test_a_value_cached_for_another_type_is_a_miss_and_is_replaced(
        stores: Context, before: Any, old_value: Any, after: Any, new_value: Any) -> None:
    target = under_new_model(stores, after, new_value)
    payload = cached_by(stores, before, old_value)
    key = key_of(stores, target)
    assert stores.dynamics.put(key, payload, 60)
    reader = type(target)(target.guid)
    value = reader.reading  # type: ignore[attr-defined]
    assert value == new_value and type(value) is type(new_value)
    hybrid = target._meta.name
    assert stores.stats[f"dynamic.{hybrid}.reading.mistyped"] == 1
    assert CALLS[hybrid] == 1
    assert stores.dynamics.get(key) != payload, "the entry of the other type is replaced"
    again = type(target)(target.guid).reading  # type: ignore[attr-defined]
    assert again == new_value and CALLS[hybrid] == 1, "and the new value is served from the cache"


def test_a_value_cached_for_the_same_type_by_another_class_is_served(stores: Context) -> None:
    """The tag names the declared type, not the class: an unchanged type stays a hit across a deploy."""
    target = under_new_model(stores, list[int], [9])
    payload = cached_by(stores, list[int], [1, 2])
    assert stores.dynamics.put(key_of(stores, target), payload, 60)
    assert type(target)(target.guid).reading == [1, 2]  # type: ignore[attr-defined]
    assert CALLS[target._meta.name] == 0


@pytest.mark.parametrize(("before", "old_value", "after", "served"), [
    pytest.param(list[int], [1, 2], tuple[int, ...], (1, 2), id="list-to-tuple"),
    pytest.param(set[int], {1, 2}, frozenset[int], frozenset({1, 2}), id="set-to-frozenset"),
    pytest.param(Color, Color.RED, Literal["red", "blue"], "red", id="enum-to-literal"),
    pytest.param(Literal["red", "blue"], "blue", Color, Color.BLUE, id="literal-to-enum"),
])
def test_types_admitting_and_writing_alike_read_each_others_values_as_their_own(
        stores: Context, before: Any, old_value: Any, after: Any, served: Any) -> None:
    """Their digests are one (docs/dynamics.md): the value is converted to the reader's type, never
    served as the other one's."""
    assert Validator("a", before).digest == Validator("b", after).digest
    target = under_new_model(stores, after, served)
    assert stores.dynamics.put(key_of(stores, target), cached_by(stores, before, old_value), 60)
    value = type(target)(target.guid).reading  # type: ignore[attr-defined]
    assert value == served and type(value) is type(served) and CALLS[target._meta.name] == 0


def test_a_cached_value_that_does_not_validate_is_a_miss_not_a_pydantic_error(stores: Context) -> None:
    """Even under the digest of the reader's own type (a validator changed in code the type's
    description does not show): ``from_json`` refusing a cached value is a miss."""
    target = under_new_model(stores, list[int], [1])
    spec = type(target)._meta.dynamics["reading"]
    key = key_of(stores, target)
    entry = b'["five",%d,"%s"]' % (target._revision, spec.validator.digest.encode())
    assert stores.dynamics.put(key, entry, 60)
    assert type(target)(target.guid).reading == [1]  # type: ignore[attr-defined]
    assert stores.stats[f"dynamic.{target._meta.name}.reading.mistyped"] == 1


@pytest.mark.parametrize("volatile", ["memory", "memcached"])
def test_a_locked_waiter_does_not_take_a_value_of_another_type(
        request: pytest.FixtureRequest, tmp_path: Path, namespace: str, volatile: str) -> None:
    """The single flight's waiter checks what it finds as a reader does: a value another version
    stored while this caller waited is not returned; once the lock is gone it computes."""
    context = configure(f"sqlite:///{tmp_path / 'dal.sqlite3'}", volatile_url_for(volatile, request),
                        namespace=namespace)
    target = model(str, "five", locked=True)()
    target.save()
    payload = cached_by(context, int, 5)
    key = key_of(context, target)
    lock_key = f"{key}/lock"
    store = context.dynamics.store
    assert store.add(lock_key, context.dynamics.signer.seal(lock_key, b"another-version"), 5)

    def other_version() -> None:  # stores its value while holding the lock, then releases it
        time.sleep(0.1)
        context.dynamics.put(key, payload, 60)
        time.sleep(0.2)
        store.delete(lock_key)

    thread = threading.Thread(target=other_version)
    thread.start()
    try:
        value = type(target)(target.guid).reading  # type: ignore[attr-defined]
    finally:
        thread.join()
    assert value == "five" and CALLS[target._meta.name] == 1
    assert context.stats[f"dynamic.{target._meta.name}.reading.lock_waits"] == 1


def test_the_digest_names_the_declared_type() -> None:
    digests = {name: Validator("v", declared).digest for name, declared in [
        ("int", int), ("str", str), ("float", float), ("list", list), ("list[int]", list[int]),
        ("list[str]", list[str]), ("datetime", datetime.datetime), ("up-down", ["UP", "DOWN"]),
        ("ok-ko", ["OK", "KO"]), ("ints", [1, 2]), ("floats", [1.0, 2.0]), ("bools", [True, False])]}
    assert len(set(digests.values())) == len(digests), digests
    assert Validator("a", list[int]).digest == Validator("b", list[int]).digest
    assert Validator("a", ["UP", "DOWN"]).digest == Validator("b", ["DOWN", "UP"]).digest, "a set of values"


#: a deploy's two versions, each a process of its own: the model declares ``reading`` as argv[4]
CHILD = r'''
import datetime, json, sys
from dal import DataObject, Dynamic, Property, configure
KINDS = {"int": (int, 5), "str": (str, "five"), "list": (list, ["a"]), "ints": (list[int], [1]),
         "dt": (datetime.datetime, datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)),
         "enum": (["UP", "DOWN"], "UP")}
declared, result = KINDS[sys.argv[4]]
context = configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
class Gauge(DataObject, hybrid_name="typedgauge"):
    __properties = [Property("name", str)]
    __dynamics = [Dynamic("reading", declared, 600, locked=sys.argv[6] == "locked")]
    def _reading(self):
        return result
if sys.argv[5] == "create":
    gauge = Gauge(data={"name": "g"})
    gauge.save()
    print(json.dumps(gauge.guid))
else:
    value = Gauge(sys.argv[5]).reading
    computed = context.stats["dynamic.typedgauge.reading.computations"]
    print(json.dumps([value == result and type(value) is type(result), type(value).__name__, computed]))
'''


@pytest.mark.memcached
@pytest.mark.parametrize("locked", ["locked", "unlocked"])
def test_two_versions_of_a_model_sharing_memcached_each_read_their_own_type(
        memcached_server: Any, tmp_path: Path, namespace: str, locked: str) -> None:
    durable = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    env = {**os.environ, "PYTHONHASHSEED": "random"}

    def run(kind: str, what: str) -> Any:
        done = subprocess.run([sys.executable, "-c", CHILD, durable, memcached_server.url, namespace, kind,
                               what, locked], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    guid = run("int", "create")
    # [its own value, of its own type; the type's name; computations in that process]
    assert run("int", guid) == [True, "int", 1]
    assert run("int", guid) == [True, "int", 0], "the same type in another process is a hit"
    assert run("str", guid) == [True, "str", 1]
    assert run("list", guid) == [True, "list", 1]
    assert run("dt", guid) == [True, "datetime", 1]
    assert run("str", guid) == [True, "str", 1]
    assert run("enum", guid) == [True, "str", 1]
    assert run("str", guid) == [True, "str", 1]
    assert run("ints", guid) == [True, "list", 1]
    assert run("ints", guid) == [True, "list", 0]


#: types whose repr or schema once printed something that differs between processes: a set in an
#: Annotated validator (hash-seed order), a default computed at import, a docstring (gone under -OO)
DIGESTED = r'''
import dataclasses, datetime, json, uuid
from typing import Annotated
from pydantic import AfterValidator, BaseModel, Field
from dal.validators import Validator

@dataclasses.dataclass(frozen=True)
class OneOf:
    allowed: frozenset
    def __call__(self, value):
        if value not in self.allowed:
            raise ValueError(value)
        return value

class Report(BaseModel):
    """A report: its docstring is the schema's description."""
    generated: datetime.datetime = datetime.datetime.now()
    ident: str = str(uuid.uuid4())
    default: int = Field(0, description="a field named like a schema keyword")

types = [Annotated[str, AfterValidator(OneOf(frozenset({"eu", "us", "apac", "latam", "emea"})))], Report,
         Annotated[int, Field(ge=0, le=100)], list[Report]]
print(json.dumps([Validator("T.x", declared).digest for declared in types]))
'''


def test_the_digest_of_one_type_is_the_same_in_every_process() -> None:
    def digests(*flags: str, seed: str) -> list[str]:
        done = subprocess.run([sys.executable, *flags, "-c", DIGESTED], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr[-2000:]
        found: list[str] = json.loads(done.stdout)
        return found

    first = digests(seed="1")
    assert len(set(first)) == len(first), first
    assert all(digests(*flags, seed=seed) == first for flags, seed in [((), "2"), ((), "3"), (("-OO",), "4")])


def test_the_digest_tells_constraints_apart() -> None:
    percent, half = Annotated[int, Field(le=100)], Annotated[int, Field(le=50)]
    assert Validator("a", percent).digest != Validator("b", half).digest


@pytest.mark.parametrize(("loader", "problem"), [
    (lambda self, x: 1, "missing a required argument: 'x'"),
    (staticmethod(lambda self: 1), "missing a required argument: 'self'"),
    (lambda: 1, "too many positional arguments"),
])
def test_a_loader_that_cannot_be_called_so_is_refused_when_declared(loader: Any, problem: str) -> None:
    """A loader taking another required argument (or not the object) was accepted, then every read raised a
    bare TypeError: refused when the class is created, saying how to define it. Those that can be called
    (the spec received, a default, a static or class method taking nothing, an lru_cache, a wrapper taking
    the object whatever it wraps) stay accepted."""
    name = f"L{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidValueError, match=rf"{name}._size cannot be called as the loader of Dynamic "
                       rf"'size' \({problem}\); define `def _size\(self\)"):
        type(name, (DataObject,), {f"_{name}__dynamics": [Dynamic("size", int, 5)], "_size": loader,
                                   "__module__": __name__}, hybrid_name=name.lower())
    def doubled(loader: Any) -> Any:  # a decorator whose wrapper takes other arguments than what it wraps
        @functools.wraps(loader)
        def wrapper(self: Any) -> Any:
            return loader(self, 2)
        return wrapper

    for fine in [lambda self, dynamic: 1, lambda self, x=2: 1, staticmethod(lambda: 1),
                 classmethod(lambda cls: 1), functools.lru_cache(maxsize=None)(lambda self: 1),
                 doubled(lambda self, factor: factor)]:
        other = f"L{uuid.uuid4().hex[:8]}"
        type(other, (DataObject,), {f"_{other}__dynamics": [Dynamic("size", int, 5)], "_size": fine,
                                    "__module__": __name__}, hybrid_name=other.lower())


def test_a_serialization_alias_changes_no_digest() -> None:
    """pydantic's schema of what a model writes names its fields by their serialization aliases, but dal
    writes them by name: a model with one must keep the digest of the same model without (the values
    cached before this version stayed hits), where comparing the aliased schema made it another."""
    class Plain(pydantic.BaseModel):
        a: int

    class Aliased(pydantic.BaseModel):
        a: int = pydantic.Field(serialization_alias="A")

    assert Validator("x", Aliased).digest == Validator("x", Plain).digest
