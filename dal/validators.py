"""What a declared type admits, and the proof that every admitted value is stored exactly.

:class:`Validator` is compiled once per property (or dynamic) and checks every assignment:
the value must fit the declared type (pydantic, strict), JSON must hold it (no NaN or
infinities at any depth), and what is stored must read back as the value itself. It knows
nothing of hybrids: the specs (:mod:`dal.structures`) hold one each.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from enum import Enum
from typing import Any, ForwardRef, cast, get_args

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from dal.exceptions import InvalidValueError
from dal.type_digest import json_schema, type_digest, type_label, values_digest
from dal.type_probes import probes
from dal.values import (
    FROZEN,
    encodable,
    identical,
    json_copy,
    safe_repr,
    same,
    sets_sorted,
    subclass_in,
    unshared,
    zone_problem,
)

#: types whose JSON form is the Python value itself: no conversion on load or store
_NATIVE = (str, int, float, bool, list, dict)
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)  # JSON holds no NaN or Infinity
#: what pydantic's SecretStr, SecretBytes and Secret[...] store instead of their value
_MASK = "**********"
_SECRET_ADVICE = (
    f"pydantic's secret types (SecretStr, SecretBytes, Secret[...]) are stored as their mask {_MASK!r}, "
    "never as their value, so the stored object would lose it; store a str (or bytes) and wrap it "
    "yourself where it must not be shown (SecretStr(obj.password))")
_FINITE_ADVICE = "store None, or a finite number, instead"
#: what to do about a str that UTF-8 cannot encode (the stored document is UTF-8)
SURROGATE_ADVICE = (
    "a lone surrogate is not Unicode text (it comes from decoding bytes with errors='surrogateescape' "
    "or from a broken UTF-16 pair); decode with errors='replace', or store the bytes as base64")
#: an int of at most this many bits has fewer digits (4214) than Python turns into text by default
_CHEAP_BITS = 14000
_BIG_INT_ADVICE = "store it as a str (str(value)), or as a float if an approximation will do"
#: how many lists and dicts a stored value may nest (the value itself is the first): far more than data
#: needs, and what every reader of its document (a load, a query, dump, check, copy, a dump file's load)
#: decodes well within Python's default recursion limit (1000), which json's C code counts too
MAX_DEPTH = 100
_DEPTH_ADVICE = (f"flatten it (at most {MAX_DEPTH} nested lists and dicts), or store it as a str "
                 "(json.dumps(value)) and decode it where you read it")
_ZONE_ADVICE = ("only the offset of the moment is stored, so the zone would read back as a fixed offset "
                "(wrong after a summer-time change); convert it to UTC (value.astimezone(timezone.utc)) or "
                "to a fixed offset, and keep the zone's name in another property if it matters")


class Validator:
    """Validate values of one declared type; compiled once, used at every assignment.

    Every value it lets through is stored exactly: JSON holds it (no NaN or infinities, at
    any depth, whatever the type), and what is stored reads back as the value itself. A type
    whose probe values do not read back (pydantic's ``SecretStr`` stores its mask) is refused
    when the class is created; any other value that would not read back is refused when assigned.
    """

    def __init__(self, owner: str, declared: object) -> None:
        self.owner = owner
        self.enum: tuple[object, ...] | None = None
        self.native = False
        self.sets = False  # whether the type holds a set or a frozenset, at any depth (see to_json)
        self.zoned = False  # whether it holds a datetime or a time, at any depth (see zone_problem)
        self.dataclasses = False  # whether it holds a dataclass, at any depth (which model_dump() loses)
        self.members: tuple[type[Enum], ...] = ()  # the allowed values' Enum classes: a member is its value
        if isinstance(declared, (list, tuple)):
            if not declared:
                raise InvalidValueError(f"{owner}: an enum needs at least one allowed value")
            self.members = tuple(dict.fromkeys(type(item) for item in declared if isinstance(item, Enum)))
            declared = [item.value if isinstance(item, Enum) else item for item in declared]
            for item in declared:  # each must read back as itself, the same type (no subclass) included
                if problem := _not_json(item, "it") or subclass_in(item, "it"):
                    advice = _FINITE_ADVICE if _non_finite(item) else (
                        "allowed values are JSON values of exact types (str, int, float, bool, list, dict)")
                    raise InvalidValueError(
                        f"{owner}: the allowed value {item!r} cannot be stored: {problem}; {advice}")
            self.enum = tuple(declared)
            self.adapter: TypeAdapter[Any] | None = None
            self.native = all(isinstance(item, (str, int, float, bool)) for item in declared)
            self.label = "one of " + ", ".join(repr(item) for item in declared)
            self.digest = values_digest(declared)  # names them in a cached dynamic's tag
            return
        try:
            form, strict = cast(Any, declared), declared in _NATIVE
            self.adapter = TypeAdapter(form, config=_STRICT) if strict else TypeAdapter(form)
        except Exception as exc:  # pydantic raises several kinds for types it cannot handle
            raise InvalidValueError(
                f"{owner}: type {declared!r} cannot be validated; use str, int, float, bool, list, dict, "
                "a list of allowed values, or a JSON-serializable type pydantic understands") from exc
        if not self.adapter.pydantic_complete and _named(declared):  # no model_rebuild() resolves it
            raise InvalidValueError(f"{owner}: type {declared!r} names a type pydantic cannot find; pass the "
                                    "type itself (datetime, not 'datetime')")
        self.native = declared in _NATIVE
        self.label = type_label(declared)  # list[float], int | str: not the bare origin (list, Union)
        schema = None if self.native else json_schema(self.adapter)
        #: names the declared type in a cached dynamic's tag (dal.type_digest)
        self.digest = type_digest(declared, schema, self.adapter)
        if not self.native:
            self.sets = _holds(self.adapter.core_schema, ("set", "frozenset"))
            self.zoned = _holds(self.adapter.core_schema, ("datetime", "time"))
            self.dataclasses = _holds(self.adapter.core_schema, ("dataclass",))
            if schema is not None:
                self._probe(schema)

    def __call__(self, value: object) -> Any:
        """Return ``value`` validated (None passes), a copy that shares nothing; raise InvalidValueError."""
        if value is None:
            return None
        if self.enum is not None:
            given = value.value if isinstance(value, self.members) else value  # Status.NEW is 'NEW'
            # 1 == True in Python; an enum of strings must not admit a bool or an int by accident, nor
            # one of lists [True, 2.0] for [1, 2]; same() compares typed items, of JSON values only
            if (type(given) not in (list, dict) or _plain_json(given)) and any(
                    same(given, item) for item in self.enum):
                return json_copy(given)  # an enum of lists: the caller's list is not the object's
            raise InvalidValueError(f"{self.owner} must be {self.label}, not {_shown(value)}")
        assert self.adapter is not None
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValueError(f"{self.owner} cannot hold {value!r}, which JSON cannot hold; "
                                    f"{_FINITE_ADVICE}")
        try:
            result = self.adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            problem = exc.errors()[0].get("msg", "invalid value")
            raise InvalidValueError(
                f"{self.owner} must be {self.label}, not {_shown(value)} ({type(value).__name__}): "
                f"{problem}"
            ) from None
        if self.native:
            return self._native(value, result)
        try:
            return self._typed(value, result)
        except RecursionError:  # a value nested hundreds deep, or holding itself: far deeper than allowed
            raise InvalidValueError(f"{self.owner} cannot hold this {type(value).__name__}: it nests "
                                    f"{_NESTED} {MAX_DEPTH} deep; {_DEPTH_ADVICE}") from None

    def _native(self, value: object, result: Any) -> Any:
        """Return a validated ``str``, ``int``, ``float``, ``bool``, ``list`` or ``dict`` as stored."""
        if isinstance(result, str):
            if not result.isascii() and not encodable(result):  # isascii: the common case, quick
                raise InvalidValueError(f"{self.owner} cannot hold {value!r}: {_not_json(result, 'it')}; "
                                        f"{SURROGATE_ADVICE}")
        elif isinstance(result, (list, dict)) and not _plain_json(result):
            problem = _not_json(result)
            if problem:
                shown = f"this {type(value).__name__}" if _NESTED in problem else _shown(value)
                raise InvalidValueError(
                    f"{self.owner} cannot hold {shown}: {problem}; {json_advice(result, problem)}")
            return json_copy(result)  # subclasses (an IntEnum, a list's): unshared() sees exact types
        elif type(result) is int and result.bit_length() > _CHEAP_BITS and _too_long(result):
            raise InvalidValueError(
                f"{self.owner} cannot hold it: {_not_json(result, 'it')}; {_BIG_INT_ADVICE}")
        return unshared(result)

    def _typed(self, value: object, result: Any) -> Any:
        """Return a validated value of a type pydantic converts, as it reads back from its stored form."""
        if problem := non_finite(result):  # a NaN, or lists nested too deep (then this says which)
            shown = f"this {type(value).__name__}" if _NESTED in problem else _shown(value)
            raise InvalidValueError(
                f"{self.owner} cannot hold {shown}: {problem}; {self._advice(result, problem)}")
        if self.zoned and (problem := zone_problem(result, "value")):
            raise InvalidValueError(f"{self.owner} cannot hold {_shown(value)}: {problem}; {_ZONE_ADVICE}")
        stored, back, problem = self._round_trip(result)
        if problem:
            shown = f"this {type(value).__name__}" if _NESTED in problem else _shown(value)
            raise InvalidValueError(
                f"{self.owner} cannot hold {shown}: {problem}; {self._advice(stored, problem)}")
        return result if isinstance(result, FROZEN) else back  # read back: pydantic keeps a model as given

    def to_json(self, value: Any) -> Any:
        """Return the JSON-ready form of a validated value: one form per value (sets sorted)."""
        if value is None or self.native or self.adapter is None:
            return value
        stored = self.adapter.dump_python(value, mode="json")
        return sets_sorted(value, stored) if self.sets else stored

    def from_json(self, value: Any) -> Any:
        """Return the Python value for a stored JSON value."""
        if value is None or self.native or self.adapter is None:
            return value
        return self.adapter.validate_python(value)

    def _round_trip(self, value: Any) -> tuple[Any, Any, str]:
        """Return ``value``'s stored form, what that reads back as, and why it is not ``value`` (or '')."""
        try:
            stored = self.to_json(value)
        except Exception as exc:  # pydantic's serialization errors, UnicodeDecodeError for bytes, ...
            if str(exc) == _SERIALIZER_TOO_DEEP:  # pydantic's own limit, some 250 levels: past MAX_DEPTH
                return None, None, f"the stored value nests {_NESTED} {MAX_DEPTH} deep"
            return None, None, f"it cannot be stored as JSON ({exc})"
        problem = _not_json(stored, "the stored value")
        if problem:
            return stored, None, problem
        try:
            back = self.from_json(stored)
        except ValueError:  # pydantic's ValidationError is one
            return stored, None, (f"it would be stored as {shorten(stored)}, which does not read back as "
                                  f"{self.label}")
        if not identical(back, value):
            return stored, back, (f"it would be stored as {shorten(stored)}, which reads back as "
                                  f"{shorten(back)} ({type(back).__name__})")
        return stored, back, ""

    def _advice(self, stored: Any, problem: str = "") -> str:
        if _NESTED in problem:  # first: the walk for a NaN (and json.dumps) may not reach the bottom of it
            return _DEPTH_ADVICE
        if _non_finite(stored):
            return _FINITE_ADVICE
        if "digits" in problem:  # before json.dumps, which cannot write that int
            return _BIG_INT_ADVICE
        if _MASK in json.dumps(stored, default=str):
            return _SECRET_ADVICE
        return ("the object would not read back as it was saved; assign a value its declared type stores "
                "exactly, or declare a type whose JSON form tells its values apart")

    def _probe(self, schema: dict[str, Any]) -> None:
        """Refuse the declared type if a value built from its JSON ``schema`` does not read back as itself.

        Probes cannot cover every value (the check at assignment does), but they catch a type
        whose serializer loses what it holds, such as a secret stored as its mask, before any
        object exists.
        """
        for probe in probes(schema, schema.get("$defs", {})):
            try:
                value = self.from_json(probe)
            except Exception:  # the probe misses a constraint of the type (or a validator of it): no verdict
                continue
            stored, _, problem = self._round_trip(value)
            if problem:
                raise InvalidValueError(
                    f"{self.owner}: type {self.label} does not store its values exactly: a {self.label} made "
                    f"from {shorten(probe)} is {shorten(value)}; {problem}; {self._advice(stored)}")


def _shown(value: object) -> str:
    """Return ``safe_repr(value)``, or what it is when it nests too deeply for ``repr()``."""
    try:
        return safe_repr(value)
    except RecursionError:
        return f"a {type(value).__name__} nested too deeply to show"


def _holds(schema: Any, kinds: tuple[str, ...]) -> bool:
    """Tell whether a pydantic core schema validates one of ``kinds`` anywhere (models included)."""
    if isinstance(schema, dict):
        return schema.get("type") in kinds or any(_holds(part, kinds) for part in schema.values())
    return isinstance(schema, (list, tuple)) and any(_holds(part, kinds) for part in schema)


def json_problem(value: object, path: str = "value") -> str:
    """Return what keeps ``value`` from being stored and read back unchanged, or '' (see ``_not_json``)."""
    return "" if _plain_json(value) else _not_json(value, path)


def json_advice(value: object, problem: str) -> str:
    """Return what to do about a list or dict value ``json_problem`` found ``problem`` in."""
    if _NESTED in problem:  # first: the walk for a NaN may not reach the bottom of it
        return _DEPTH_ADVICE
    if _non_finite(value):
        return _FINITE_ADVICE
    if "digits" in problem:
        return _BIG_INT_ADVICE
    if "surrogate" in problem:
        return SURROGATE_ADVICE
    return ("it must hold JSON values only (str keys; str, int, float, bool, None, list, dict values), "
            "so it reads back exactly as stored")


def _plain_json(value: object, depth: int = 1) -> bool:
    """Return True when ``value`` is made of exact JSON types only (finite floats, str keys), its lists
    and dicts nested at most :data:`MAX_DEPTH` deep (``depth``: the level ``value`` sits at).

    What :func:`_not_json` accepts with no message to build: checked at every assignment of a
    list or a dict, it skips the path strings ``_not_json`` formats per item (a fifth of building
    a seven-field object with a list and a dict). False means "ask ``_not_json``", which also
    admits subclasses (an ``IntEnum``) and says what is wrong. Leaves are tested in their
    container's loop, not by a call each: a nested dict is walked in half the time.
    """
    kind = type(value)
    if kind is dict:
        for key in cast(dict[Any, Any], value):
            if type(key) is not str or not (key.isascii() or encodable(key)):
                return False
        items: Any = cast(dict[Any, Any], value).values()
    elif kind is list:
        items = value
    else:  # a leaf: tested as the one item of a list around it
        return _plain_json([value], depth - 1)
    if depth > MAX_DEPTH:  # too deep, or a list holding itself: _not_json says so
        return False
    depth += 1
    for item in items:
        kind = type(item)
        if kind is str:
            if not (item.isascii() or encodable(item)):
                return False
        elif kind is list or kind is dict:
            if not _plain_json(item, depth):
                return False
        elif kind is int or kind is float:  # an int too long to be cheap to write: ask _not_json
            if not (item.bit_length() <= _CHEAP_BITS if kind is int else math.isfinite(item)):
                return False
        elif kind is not bool and item is not None:
            return False
    return True


#: what a problem of a value nested too deeply says (and its advice looks for)
_NESTED = "lists and dicts more than"
#: what pydantic's serializer says of a value nested past its own limit
_SERIALIZER_TOO_DEEP = "Maximum serialization depth exceeded"


def _not_json(value: object, path: str = "value", depth: int = 1) -> str:
    """Return what keeps ``value`` from a JSON round trip that gives it back unchanged, or ''
    (``depth``: the level ``value`` sits at, lists and dicts nest at most :data:`MAX_DEPTH` deep)."""
    if depth > MAX_DEPTH and isinstance(value, (list, dict)):  # named by its outermost path: short
        return f"{path.partition('[')[0]} nests {_NESTED} {MAX_DEPTH} deep"
    if isinstance(value, str):
        return "" if value.isascii() or encodable(value) else (
            f"{path} is {shorten(value)}, whose lone surrogate UTF-8 cannot encode")
    if value is None or isinstance(value, (bool, int)):
        return "" if value is None or not _too_long(value) else (
            f"{path} is an int of about {int(value.bit_length() * 0.30103)} digits, more than Python writes "
            f"as text (sys.get_int_max_str_digits() is {sys.get_int_max_str_digits()})")
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    if isinstance(value, list):
        return next((p for i, item in enumerate(value) if (p := _not_json(item, f"{path}[{i}]", depth + 1))),
                    "")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has the key {key!r}; JSON object keys are strings"
            if not (key.isascii() or encodable(key)):
                return f"{path} has the key {shorten(key)}, whose lone surrogate UTF-8 cannot encode"
            problem = _not_json(item, f"{path}[{key!r}]", depth + 1)
            if problem:
                return problem
        return ""
    return f"{path} holds a {type(value).__name__} ({value!r})"


def non_finite(value: object, path: str = "value", depth: int = 1) -> str:
    """Return where a NaN or an infinity sits in ``value`` (lists, tuples, sets, dict values), or ''; or
    that it nests deeper than any stored value (a query's value; +1: an IN list of values at the limit)."""
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    if depth > MAX_DEPTH + 1 and isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"{path.partition('[')[0]} nests {_NESTED} {MAX_DEPTH} deep"
    inner = depth + 1
    if isinstance(value, (list, tuple)):
        return next((p for i, item in enumerate(value) if (p := non_finite(item, f"{path}[{i}]", inner))), "")
    if isinstance(value, (set, frozenset)):
        return next((p for item in value if (p := non_finite(item, f"an item of {path}", inner))), "")
    if isinstance(value, dict):
        return next((p for key, item in value.items() if (p := non_finite(item, f"{path}[{key!r}]", inner))),
                    "")
    if isinstance(value, BaseModel) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        # pydantic writes a NaN nested in an untyped (Any) field as null: look before it does
        fields = vars(value) if hasattr(value, "__dict__") else {}
        return next((p for name, item in fields.items() if (p := non_finite(item, f"{path}.{name}", inner))),
                    "")
    return ""


def _non_finite(value: object) -> bool:
    return bool(non_finite(value))


def _too_long(value: int) -> bool:
    """Tell whether ``value`` has more digits than Python writes as text (JSON, keys, repr)."""
    try:  # the bit length first: most ints are too short to need their text built
        return value.bit_length() > _CHEAP_BITS and not int.__repr__(value)
    except ValueError:
        return True


def shorten(value: Any) -> str:
    text = safe_repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _named(declared: object) -> bool:  # is, or holds, a type named by a string ('datetime', list['X'])
    return isinstance(declared, (str, ForwardRef)) or any(_named(arg) for arg in get_args(declared))
