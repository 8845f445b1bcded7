"""One notion of value identity, for every place dal compares stored values.

Query evaluation, changed-field detection and the merge on save, unique and index keys and
the version tokens of cached query results all decide whether two stored (JSON) values are
"the same". They must agree, or an index answers differently from a scan and a cached result
outlives a write that changed it. The rule, at any depth of a list or a dict:

- types are part of the value: ``True``, ``1``, ``1.0`` and ``'1'`` all differ, so ``[True]``,
  ``[1]`` and ``[1.0]`` differ too (a float field stores floats: its validator turns ``1``
  into ``1.0``, so within one field this only separates what the model lets differ);
- ``-0.0`` is ``0.0`` (they compare equal, and one key must name both);
- dicts compare by their items, whatever their order; lists by their items, in order;
- case-insensitive comparisons fold every string (dict keys excepted) with ``str.casefold``;
- a set is stored as a list sorted by ``canonical`` (``sets_sorted``), so one set has one form.

NaN and infinities never get here: JSON cannot hold them, and validation refuses them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import json.encoder
import pickle
from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID


def _canonical_encoder() -> Callable[[Any], str]:
    """Return ``json.dumps(value, sort_keys=True, separators=(",", ":"))`` as a function, made once.

    The C encoder is made once here instead of on every call (as ``json.dumps`` does), which
    was a third of the time of a small value. Without circular-reference checks: a circular value
    recurses until RecursionError, as :func:`_normalized` always made it do. Used only if it
    writes exactly what ``json.dumps`` writes.
    """
    slow = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return slow.encode
    try:
        # markers, default, string encoder, indent, separators, sort_keys, skipkeys, allow_nan
        fast = make(None, slow.default, json.encoder.encode_basestring_ascii, None, ":", ",",
                    True, False, True)
    except TypeError:  # another interpreter's private signature
        return slow.encode

    def encode(value: Any) -> str:
        return "".join(fast(value, 0))

    probe = {"b": [1.5, -0.0, 1e300, "\u00e9\n\"", None, True, 10 ** 20], "a": {"z": {}, "y": []}, "é": ""}
    return encode if encode(probe) == slow.encode(probe) else slow.encode


_encode_canonical = _canonical_encoder()


def canonical(value: Any) -> str:
    """Return ``value`` as text in which two values are equal exactly when they are the same."""
    # the same text as keys stored before this module existed (ASCII-escaped): index keys of
    # lists and dicts stay valid
    text = _encode_canonical(value)
    # -0.0 is the only value normalizing changes, and it is written "-0.0": without that text
    # there is nothing to normalize (the common case, which then skips a walk of the whole value)
    return text if "-0.0" not in text else _encode_canonical(_normalized(value))


def same(left: Any, right: Any) -> bool:
    """Tell whether two stored values are the same value (types included, at any depth)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, (list, dict)):
        return canonical(left) == canonical(right)
    return bool(left == right)


def identical(left: Any, right: Any) -> bool:
    """Tell whether a Python value read back is the one stored: same types at any depth (a tuple is no
    list, an int key no str key, a model's field holding 1 no field holding True), equal values; for any
    values, where ``same`` takes JSON values."""
    kind = type(left)
    if kind is not type(right):
        return False
    if kind in _SCALARS:
        return bool(left == right)
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(identical, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(identical(item, right[key]) for key, item in left.items())
    # a model's == compares its fields with ==: one built unvalidated (model_construct) or changed in
    # place holding 1 for a bool equals the one read back, but is stored as 1, which its type refuses
    if _structured(kind) and not identical(_state(left), _state(right)):
        return False
    try:
        return bool(left == right)
    except Exception:  # an __eq__ that raises cannot vouch for the round trip
        return False


#: typed values nothing changes in place: validated when assigned, they still hold (any other, a model,
#: a dataclass, a list, can be changed in place, bypassing validation)
FROZEN = (str, bytes, bool, int, float, type(None), dt.date, dt.time, dt.timedelta, Enum, Decimal, UUID)


#: the types ``identical`` and ``zone_problem`` settle at once (the leaves of most values)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _structured(kind: type) -> bool:
    """Tell whether ``kind`` is a pydantic model or a dataclass (the pydantic test first: a model class
    answers a missing attribute slowly)."""
    return hasattr(kind, "__pydantic_fields__") or hasattr(kind, "__dataclass_fields__")


def _state(value: Any) -> dict[str, Any]:
    """Return a pydantic model's or a dataclass's declared fields (a model's extra fields too) by name:
    not the rest of its ``__dict__`` (a ``cached_property``'s value, an attribute set later), which
    is never stored and so never read back."""
    fields = getattr(type(value), "__pydantic_fields__", None)
    if fields is not None:
        return {**{name: getattr(value, name) for name in fields},
                **(getattr(value, "__pydantic_extra__", None) or {})}
    return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}


def encodable(text: str) -> bool:
    """Tell whether UTF-8 can encode ``text`` (it cannot encode a lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def safe_repr(value: Any) -> str:
    """Return ``repr(value)``, or what it is when it is or holds an int too long to write as text
    (more digits than ``sys.get_int_max_str_digits()``), whose repr raises ValueError."""
    try:
        return repr(value)
    except ValueError:
        kind = type(value).__name__
        return f"an {kind} too long to write as text" if isinstance(value, int) else (
            f"a {kind} holding an int too long to write as text")


def clipped_repr(text: str, most: int = 200) -> str:
    """Return ``repr(text)``, cut short past ``most`` characters (a key a message names may be huge)."""
    return repr(text) if len(text) <= most else f"{text[:most]!r}... ({len(text):,} characters)"


def fold(value: Any) -> Any:
    """Return ``value`` with every string in it casefolded (dict keys kept), for case-insensitive tests."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list):
        return [fold(item) for item in value]
    if isinstance(value, tuple):
        return tuple(fold(item) for item in value)
    if isinstance(value, dict):
        return {key: fold(item) for key, item in value.items()}
    return value


def has_text(value: Any) -> bool:
    """Tell whether a string occurs anywhere in ``value`` (so case-insensitivity can change its matches)."""
    if isinstance(value, str):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_text(item) for item in value)
    if isinstance(value, dict):
        return any(has_text(item) for item in value.values())
    return False


def _normalized(value: Any) -> Any:
    if isinstance(value, float):
        return value + 0.0  # -0.0 + 0.0 is 0.0
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalized(item) for key, item in value.items()}
    return value


def sets_sorted(value: Any, stored: Any) -> Any:
    """Return ``stored``, the JSON form of ``value``, with each set of ``value`` a list in canonical order.

    A set is written in its iteration order, which differs between processes (hash seeds) and
    between sets built in different orders: one set would have many stored forms, and ``same``
    (which compares lists in order) would find changes nobody made and two unique sets differ.
    Sorted by :func:`canonical`, at any depth. ``stored`` is walked along ``value`` (lists,
    tuples, dicts, pydantic models, dataclasses); a part whose JSON form has another shape (a
    custom serializer) is kept as it is.
    """
    if isinstance(value, (set, frozenset, list, tuple)):
        if type(stored) is not list or len(stored) != len(value):
            return stored
        items = [sets_sorted(item, form) for item, form in zip(value, stored, strict=True)]
        return sorted(items, key=canonical) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        if type(stored) is not dict or len(stored) != len(value):
            return stored
        # the keys may have changed (an int key is written as a str), but not their order
        pairs = zip(value.values(), stored.items(), strict=True)
        return {key: sets_sorted(item, form) for item, (key, form) in pairs}
    if type(stored) is dict:
        fields = _fields(value)
        return {key: sets_sorted(fields[key], form) if key in fields else form
                for key, form in stored.items()}
    return stored


def _fields(value: Any) -> dict[str, Any]:
    """Return the fields of a pydantic model or a dataclass by name (extra fields included), and by
    the alias pydantic writes them under; else {}."""
    if isinstance(value, type):
        return {}
    if dataclasses.is_dataclass(value):
        found = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    elif getattr(value, "__pydantic_fields__", None) is not None:
        # a model keeps its fields in its __dict__, its extra fields apart
        found = {**vars(value), **(getattr(value, "__pydantic_extra__", None) or {})}
    else:
        return {}
    # pydantic models and dataclasses may write a field under its alias
    for name, info in (getattr(type(value), "__pydantic_fields__", None) or {}).items():
        for alias in (info.serialization_alias, info.alias):
            if alias and name in found:
                found.setdefault(alias, found[name])
    return found


def zone_problem(value: object, path: str) -> str:
    """Return where a datetime or a time with a zone (not a fixed offset) sits in ``value``, or ''.

    A zone's offset depends on the date (``utcoffset(None)`` is None); JSON stores only the offset
    of the moment, so the zone would read back as that offset (a time's zone: as no zone at all).
    """
    if type(value) in _SCALARS:
        return ""
    if isinstance(value, (dt.datetime, dt.time)):
        zone = value.tzinfo  # a fixed offset (UTC included) has one offset for every date: utcoffset(None)
        fixed = zone is None or zone.utcoffset(None) is not None
        return "" if fixed else f"{path} has the time zone {zone!r}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return next((p for item in value if (p := zone_problem(item, f"an item of {path}"))), "")
    if isinstance(value, dict):
        return next((p for key, item in value.items() if (p := zone_problem(key, f"a key of {path}")
                                                          or zone_problem(item, f"{path}[{key!r}]"))), "")
    if not _structured(type(value)):
        return ""
    fields = _state(value).items()
    return next((p for name, item in fields if (p := zone_problem(item, f"{path}.{name}"))), "")


def subclass_in(value: object, path: str) -> str:
    """Return where a subclass of a JSON type (an IntEnum, a str subclass) sits in ``value``, or ''.

    JSON keeps no subclass: it reads back as the plain value, which no allowed value of the
    subclass is the same as. Called on allowed values only (class creation), after ``_not_json``.
    """
    if type(value) is list:
        return next((p for i, item in enumerate(value) if (p := subclass_in(item, f"{path}[{i}]"))), "")
    if type(value) is dict:
        return next((p for key, item in value.items() if (p := subclass_in(key, f"a key of {path}")
                                                          or subclass_in(item, f"{path}[{key!r}]"))), "")
    if value is None or type(value) in (str, int, float, bool):
        return ""
    plain = next(kind for kind in (bool, int, float, str, list, dict) if isinstance(value, kind))
    return f"{path} is a {type(value).__name__} ({value!r}), which is stored as a plain {plain.__name__}"


def json_copy(value: Any) -> Any:
    """Return a copy of a list or a dict at any depth (anything else as is: a JSON leaf never changes).

    Copied by pickle, whose C code copies a 400-node dict some 3x faster than walking it in Python (and
    than decoding the stored form again); it copies as ``copy.deepcopy`` does: exact types (1, 1.0 and
    True stay apart), a container held twice held twice by the copy too. A value pickle cannot take (an
    unpicklable object put in by changing the list in place) is walked instead, that object shared."""
    if not isinstance(value, (list, dict)):
        return value
    try:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:  # whatever an object's __reduce__ raises: the walk below copies the containers
        return _walked(value)


def _walked(value: Any) -> Any:
    if isinstance(value, list):
        return [_walked(item) for item in value]
    if isinstance(value, dict):
        return {key: _walked(item) for key, item in value.items()}
    return value


#: the containers a JSON value nests: what an assigned list or dict must not share with the caller
_CONTAINERS = frozenset({list, dict})


def unshared(value: Any) -> Any:
    """Return ``value`` with copies of the lists and dicts it holds, for a list or a dict whose outer
    container is already a copy of its own (what pydantic's validation of ``list`` and ``dict`` gives):
    an assigned value must not change with the caller's nested list. A flat one is returned as is.

    Exact types only (``map(type, ...)`` runs in C: a third of a generator's time for five items); a
    value holding subclasses of list or dict is not plain JSON, and the validator copies it whole."""
    kind = type(value)
    items = value if kind is list else value.values() if kind is dict else ()
    return value if _CONTAINERS.isdisjoint(map(type, items)) else json_copy(value)
