"""What a ``CONTAINS`` condition compares, by the field's declared type, in its stored JSON form.

A string (a guid, a relation's guid, a string enum, a type stored as text such as an ``HttpUrl``)
takes a substring; a typed list, set or tuple (``list[str]``, ``tuple[float, int]``) an element
checked against its element type (:func:`dal.query.declared.element`); an untyped ``list``,
``tuple``, ``set`` or ``frozenset`` any element such a field stores: JSON data, checked as an
assignment checks it and turned into exactly the value stored documents hold, which is the
value both the filter compares and the cached result's digest names.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass
from typing import Any

from dal.exceptions import InvalidQueryError
from dal.query.declared import bare, element, stringlike
from dal.type_digest import json_schema
from dal.validators import Validator, json_advice, json_problem

#: JSON schema formats of text that stands for a time or a duration, not words: no substring of it means much
_TIMES = frozenset({"date-time", "date", "time", "duration"})
#: what json_problem says of a tuple or a set, which an untyped container stores as a list
_AS_LIST = re.compile(r" holds a (tuple|set|frozenset) \(")


@dataclass(frozen=True)
class Either:
    """The JSON forms CONTAINS looks for when its element is stored otherwise in different places of a
    fixed-shape tuple (see :func:`dal.query.declared.element`)."""

    forms: tuple[Any, ...]


def contained(declared: Any, kind: str, validator: Validator | None, value: Any, label: str) -> Any:
    """Return what a field declared ``declared`` (of ``kind``: guid, property, relation, dynamic)
    CONTAINS ``value`` compares with its stored values, or :class:`Either` of its forms."""
    declared = bare(declared)
    if stringlike(declared) or kind in ("guid", "relation") or _string_enum(validator):
        if not isinstance(value, str):
            raise InvalidQueryError(f"{label} is a string; CONTAINS on it takes a substring, not {value!r}")
        return value
    if declared in (list, tuple, set, frozenset):
        return _json_element(value, label)
    origin, arguments = typing.get_origin(declared), typing.get_args(declared)
    if origin in (list, tuple, set, frozenset) and arguments:
        # list[str], set[int], tuple[int, ...], tuple[int, str]: an element, checked against an
        # element type, in its JSON form
        kinds = [argument for argument in dict.fromkeys(arguments) if argument is not ...]
        forms = element(label, kinds, value)
        return forms[0] if len(forms) == 1 else Either(tuple(forms))
    if _stored_as_text(validator):  # HttpUrl, EmailStr, a UUID: CONTAINS takes a substring of the stored text
        if not isinstance(value, str):
            raise InvalidQueryError(f"{label} is stored as text; CONTAINS on it takes a substring, "
                                    f"not {value!r}")
        return value
    raise InvalidQueryError(f"{label} is not a string or a list; CONTAINS works on those only")


def _json_element(value: Any, label: str) -> Any:
    """Return an element of an untyped container as stored: JSON data only, as assigning one to the
    field requires (no tuple, set or non-string key at any depth; an ``IntEnum`` is its int)."""
    problem = json_problem(value, "the value")
    if problem:
        advice = ("an element is stored as JSON, where a tuple or a set is a list: compare with a list"
                  if _AS_LIST.search(problem) else json_advice(value, problem))
        raise InvalidQueryError(f"{label} CONTAINS takes an element as the field stores it, and {problem}; "
                                f"{advice}")
    # a subclass (an IntEnum, a str Enum, an OrderedDict) becomes the JSON type it is stored as
    return json.loads(json.dumps(value, ensure_ascii=False))


def _stored_as_text(validator: Validator | None) -> bool:
    """Tell whether the field's type is stored as a JSON string (its JSON schema says so) that is not a
    time (an ISO text, whose substrings are no query: compare it with LT/GT)."""
    adapter = getattr(validator, "adapter", None)
    schema = json_schema(adapter) if adapter is not None else None
    return schema is not None and schema.get("type") == "string" and schema.get("format", "") not in _TIMES


def _string_enum(validator: Validator | None) -> bool:
    enum = validator.enum if validator is not None else None
    return enum is not None and all(isinstance(item, str) for item in enum)
