"""Validation of a stored document against its hybrid: what a save would have accepted.

:func:`validate_document` is what ``dal check`` reports invalid documents with and what
``dal load`` validates a dump with; it sits in the model layer so both tools use it without
importing each other.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeGuard

from pydantic import ValidationError

from dal.exceptions import InvalidValueError
from dal.model.meta import HybridMeta
from dal.model.registry import hybrids
from dal.structures import GUID_RULE, is_guid
from dal.validators import Validator, shorten
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
            lossy, altered = _losses(f"{name}.{prop_name}", prop.validator, data[prop_name], value)
            dropped += [FieldProblem(prop_name, message) for message in lossy]
            problems += [FieldProblem(prop_name, message) for message in altered]
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
        elif target is not None and relation.target is None:  # not declared yet, or an abstract base
            problem = hybrids.undeclared(relation)
        if problem:
            problems.append(FieldProblem(guid_field, problem))
        document[guid_field] = target
    unknown = sorted(set(data) - meta.field_set)
    return Validation(document, problems, unknown, dropped)


def _losses(owner: str, validator: Validator, stored: Any, value: Any) -> tuple[list[str], list[str]]:
    """Return what writing ``value``, the normal form of ``stored``, would lose: the data its declared
    type drops (messages for ``Validation.dropped``), and the values it changes or the repeated items of
    a set it keeps once (messages for ``Validation.problems``)."""
    repeats: list[tuple[str, Any]] = []
    distinct = _distinct(stored, value, "", repeats)  # a repeated item is no data the type drops
    altered = [_repeated_message(owner, repeats)] if repeats else []
    lost = dropped_paths(distinct, value) if not validator.native and validator.adapter is not None else []
    changed = altered_values(distinct, value)
    if changed:
        altered.append(_altered_message(owner, validator.label, changed))
    return ([_dropped_message(owner, validator.label, lost)] if lost else []), altered


def _distinct(stored: Any, normal: Any, path: str, repeats: list[tuple[str, Any]]) -> Any:
    """Return ``stored`` without the items a set holds more than once (its normal form keeps fewer
    items), appending ``(path of the set, item)`` to ``repeats`` for each one left out."""
    if isinstance(stored, dict) and isinstance(normal, dict):
        return {key: _distinct(value, normal[key], _inner(path, key), repeats) if key in normal else value
                for key, value in stored.items()}
    if not isinstance(stored, list) or not isinstance(normal, list):
        return stored
    if len(normal) < len(stored):
        seen: set[str] = set()
        distinct = []
        for item in stored:
            text = _loosely(item)  # 1 and 1.0 are one item of a set[float]
            if text in seen:
                repeats.append((path, item))
            else:
                seen.add(text)
                distinct.append(item)
        if len(distinct) < len(stored):
            return distinct
    return [_distinct(value, kept, f"{path}[{index}]", repeats)
            for index, (value, kept) in enumerate(zip(stored, normal, strict=False))] + stored[len(normal):]


def _repeated_message(owner: str, repeats: list[tuple[str, Any]]) -> str:
    items: dict[str, dict[str, Any]] = {}  # the items each set repeats, each once
    for path, item in repeats:
        items.setdefault(path, {}).setdefault(_loosely(item), item)
    sets = []
    for path, held in items.items():
        where = f"{owner}{'' if not path or path.startswith('[') else '.'}{path}"
        more = f" and {len(held) - MAX_PATHS} more" if len(held) > MAX_PATHS else ""
        sets.append(f"{where} repeats item{'s' if len(held) > 1 else ''} "
                    f"{', '.join(shorten(item) for item in list(held.values())[:MAX_PATHS])}{more}")
    shown = "; ".join(sets)
    return (f"{shown}, but a set keeps each item once (dal never stores one twice: written by another "
            "client?); loading or copying the object would store it once: remove the repeated items")


def _dropped_message(owner: str, label: str, lost: list[str]) -> str:
    more = f" and {len(lost) - MAX_PATHS} more" if len(lost) > MAX_PATHS else ""
    return (f"{owner} holds {', '.join(lost[:MAX_PATHS])}{more}, which {label} does not declare "
            "(written by another version of the model?); this model would drop it when loading or copying "
            "the object (or saving it with a new value there): dump, load or copy it with the model that "
            "wrote it")


def _altered_message(owner: str, label: str, changed: list[tuple[str, Any, Any]]) -> str:
    shown = ", ".join(f"{path + ' ' if path else ''}{shorten(old)} as {shorten(new)}"
                      for path, old, new in changed[:MAX_PATHS])
    more = f" and {len(changed) - MAX_PATHS} more" if len(changed) > MAX_PATHS else ""
    return (f"{owner} holds a value {label} cannot hold exactly (written by another version of "
            f"the model, or another client?): this model reads {shown}{more}, so loading or copying the "
            "object would store it changed; dump, load or copy it with the model that wrote it")


#: the seconds of an ISO time, their fraction apart: the digits a datetime or a time may lose
_SECONDS = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")


def altered_values(stored: Any, normal: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Return ``(path, stored value, normal value)`` for each value ``stored`` holds that its normal form
    changed: a number that is not the same number (an int a float cannot hold exactly, 2**53 + 1),
    a moment that is not the same moment (a datetime or time finer than the microsecond).

    Only where a value was normalized: ``1`` read as ``1.0``, a set in another order, the same
    moment spelled another way lose nothing. What a normal form drops is :func:`dropped_paths`'
    to find. Used where documents are validated (check, load), never on the save or load path.
    """
    if stored is None or stored is normal or (type(stored) is str and stored == normal):
        return []
    if isinstance(stored, dict) and isinstance(normal, dict):
        return [change for key, value in stored.items() if key in normal
                for change in altered_values(value, normal[key], _inner(path, key))]
    if isinstance(stored, list) and isinstance(normal, list):
        changed = [change for index, (value, kept) in enumerate(zip(stored, normal, strict=False))
                   for change in altered_values(value, kept, f"{path}[{index}]")]
        if changed and len(stored) == len(normal):  # a set stored in another order: compare them sorted
            pairs = zip(sorted(stored, key=_loosely), sorted(normal, key=_loosely), strict=True)
            if not any(altered_values(value, kept) for value, kept in pairs):
                return []
        return changed
    if _number(stored) and _number(normal):
        return [] if stored == normal else [(path, stored, normal)]
    if isinstance(stored, str) and isinstance(normal, str) and not _same_moment(stored, normal):
        return [(path, stored, normal)]
    return []


def _inner(path: str, key: str) -> str:
    if not key.isidentifier():
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _loosely(value: Any) -> str:
    """Sort key of a set's item: numbers as floats, so an int and the float read for it sort together."""
    return canonical(_as_floats(value))


def _as_floats(value: Any) -> Any:
    if _number(value):
        return float(value)
    if isinstance(value, list):
        return [_as_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_floats(item) for key, item in value.items()}
    return value


def _same_moment(stored: str, normal: str) -> bool:
    """Tell whether two texts of which one is the other normalized name the same moment, or are no
    moments (an ISO datetime or time): then their spelling is the declared type's business."""
    first, second = _moment(stored), _moment(normal)
    if first is None or second is None:
        return True
    return first == second


def _moment(text: str) -> tuple[object, Decimal] | None:
    """Return an ISO datetime or time as (the moment to the second, the fraction of its second)."""
    match = _SECONDS.search(text)
    fraction = Decimal(f"0.{match.group(2)}") if match else Decimal(0)
    whole = f"{text[:match.start(2) - 1]}{text[match.end(2):]}" if match else text
    for kind in (dt.datetime, dt.time):
        try:
            moment = kind.fromisoformat(whole)
        except ValueError:
            continue
        if isinstance(moment, dt.datetime) and moment.tzinfo is not None:
            moment = moment.astimezone(dt.timezone.utc)
        return moment, fraction
    return None


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
