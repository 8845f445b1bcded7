"""Validation of a stored document against its hybrid: what a save would have accepted.

:func:`validate_document` is what ``dal check`` reports invalid documents with and what
``dal load`` validates a dump with; it sits in the model layer so both tools use it without
importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from pydantic import ValidationError

from dal.exceptions import InvalidValueError
from dal.model.meta import HybridMeta
from dal.structures import GUID_RULE, is_guid
from dal.validators import Validator
from dal.values import canonical


@dataclass(frozen=True)
class FieldProblem:
    """One field of one document that does not fit the model."""

    field: str
    message: str


@dataclass
class Validation:
    """A document checked against its hybrid: its normalized form and what is wrong with it."""

    #: every declared field, in declaration order, defaults filled in, values in stored JSON form
    #: (a ``dal.objects.transaction.Document``)
    document: dict[str, Any]
    problems: list[FieldProblem]
    #: stored fields the model does not declare
    unknown: list[str]
    #: fields holding data their declared type drops (a key of a nested model it does not declare):
    #: writing ``document`` would lose it
    dropped: list[FieldProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unknown and not self.dropped


#: lost paths one problem names
MAX_PATHS = 5


def valid_guid(value: object) -> TypeGuard[str]:
    """Return whether ``value`` is a guid (:func:`dal.structures.is_guid`: a UUID in canonical form)."""
    return is_guid(value)


def stored_value(validator: Validator, value: Any) -> Any:
    """Return a stored JSON value validated as strictly as an assignment, in stored form.

    Non-native types (``datetime``, ``list[int]``, models) are validated in pydantic's strict
    JSON mode, which takes an ISO string for a datetime but never ``"1"`` for an int.
    Raise InvalidValueError naming ``Class.field``.
    """
    if value is None:
        return None
    if validator.native or validator.adapter is None:
        return validator(value)
    try:
        python = validator.adapter.validate_json(json.dumps(value), strict=True)
    except ValidationError as exc:
        problem = str(exc.errors()[0].get("msg", "invalid value"))
    except (TypeError, ValueError) as exc:  # json.dumps of a value JSON cannot hold
        problem = str(exc)
    else:  # and what an assignment refuses besides: NaN and infinities, values that do not read back
        return validator.to_json(validator(python))
    raise InvalidValueError(f"{validator.owner} must be {validator.label}, not {value!r}: {problem}")


def validate_document(meta: HybridMeta, data: Mapping[str, Any]) -> Validation:
    """Check a stored (or dumped) document against its hybrid, as a save would have.

    A missing property takes its default and a missing relation is unset, as when an
    object stored by an older model is loaded; mandatory fields must then be set.
    """
    name = meta.cls.__name__
    document: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    dropped: list[FieldProblem] = []
    for prop_name, prop in meta.properties.items():
        if prop_name in data:
            try:
                value = stored_value(prop.validator, data[prop_name])
            except InvalidValueError as exc:
                problems.append(FieldProblem(prop_name, str(exc)))
                continue
            if not prop.validator.native and prop.validator.adapter is not None:  # the others keep all
                lost = dropped_paths(data[prop_name], value)
                if lost:
                    dropped.append(FieldProblem(prop_name, _dropped_message(name, prop_name,
                                                                            prop.validator.label, lost)))
        else:
            value = prop.validator.to_json(prop.make_default())
        if value is None and prop.mandatory:
            state = "null" if prop_name in data else "missing"
            problems.append(FieldProblem(prop_name, f"{name}.{prop_name} is mandatory but {state}"))
        document[prop_name] = value
    for relation in meta.relations.values():
        guid_field = relation.guid_field
        target = data.get(guid_field)
        problem = ""
        if target is not None and not valid_guid(target):
            problem = f"{name}.{guid_field} must be a guid or null, not {target!r}: {GUID_RULE}"
        elif target is None and relation.mandatory:
            problem = f"{name}.{guid_field} is mandatory but {'null' if guid_field in data else 'missing'}"
        elif target is not None and relation.target is None:
            problem = (f"{relation.qualified} points at {relation.foreign_type!r}, which is not declared; "
                       "import the module declaring it")
        if problem:
            problems.append(FieldProblem(guid_field, problem))
        document[guid_field] = target
    unknown = sorted(set(data) - meta.field_set)
    return Validation(document, problems, unknown, dropped)


def _dropped_message(name: str, field_name: str, label: str, lost: list[str]) -> str:
    more = f" and {len(lost) - MAX_PATHS} more" if len(lost) > MAX_PATHS else ""
    return (f"{name}.{field_name} holds {', '.join(lost[:MAX_PATHS])}{more}, which {label} does not declare "
            "(written by another version of the model?); this model would drop it when loading or copying "
            "the object (or saving it with a new value there): dump, load or copy it with the model that "
            "wrote it")


def dropped_paths(stored: Any, normal: Any, path: str = "") -> list[str]:
    """Return the paths (``b``, ``items[2].b``) of what ``stored`` holds and its normal form lost.

    Lost is a dict key missing at any depth, or list elements missing (a nested model that does
    not declare a key ignores it). A value normalized in place (1 stored for a float reads as
    1.0, a set's order) loses nothing: the stored JSON is compared by shape, not by value.
    """
    if isinstance(stored, dict):
        if not isinstance(normal, dict):
            return [path or "a JSON object"] if stored else []
        lost: list[str] = []
        for key, value in stored.items():
            if not key.isidentifier():
                inner = f"{path}[{json.dumps(key, ensure_ascii=False)}]"
            else:
                inner = f"{path}.{key}" if path else key
            lost += dropped_paths(value, normal[key], inner) if key in normal else [inner]
        return lost
    if isinstance(stored, list):
        if not isinstance(normal, list):
            return [path or "a JSON array"] if stored else []
        lost = []
        for index, (value, kept) in enumerate(zip(stored, normal, strict=False)):
            lost += dropped_paths(value, kept, f"{path}[{index}]")
        lost += [f"{path}[{index}]" for index in range(len(normal), len(stored))]
        return [] if lost and _matched(stored, normal) else lost
    return []


def _matched(stored: list[Any], normal: list[Any]) -> bool:
    """Tell whether the items of ``stored`` and ``normal``, each in canonical order, lose nothing: a
    set an earlier version stored in another order (its items of other lengths) loses nothing."""
    ordered, items = sorted(normal, key=canonical), sorted(stored, key=canonical)
    return len(items) <= len(ordered) and not any(
        dropped_paths(value, kept) for value, kept in zip(items, ordered, strict=False))
