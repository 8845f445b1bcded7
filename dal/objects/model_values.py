"""What a hybrid's pydantic model admits, and which of a model's values ``from_model`` assigns.

A model's property field admits what assigning admits (the property's own strict check: no ``'12'``
for an ``int``, ``'off'`` for a ``bool``, ``True`` for an enum ``[1, 2]``), and, for a type stored as
its JSON form (a ``datetime``, a ``UUID``, a ``Decimal``, an ``Enum``, a model...), that JSON form too,
as pydantic's strict JSON mode reads it (an ISO string for a ``datetime``, not a number of seconds),
given as JSON data (no bytes, set or tuple, which JSON has not), a model or a dataclass in it as its fields:
``Model.model_validate(json.loads(body))`` admits what ``Model.model_validate_json(body)`` does, and
both what ``from_model`` then assigns. ``to_model()`` validates the object's own values with pydantic's
checks only: they were checked when assigned or loaded.

``from_model`` assigns only the fields a model was given (``model_fields_set``; a computed field is
always given), and of a model ``to_model()`` made (:class:`Origin`, a private attribute, lost by a
dump), only those whose value differs from what the object held as loaded: a field another writer
changed meanwhile, which the model did not, keeps that writer's value, as ``save()`` merges.
"""

from __future__ import annotations

import dataclasses
import json
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import to_jsonable_python

from dal.exceptions import InvalidValueError
from dal.objects.transaction import decode, edited_since
from dal.values import same

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta
    from dal.validators import Validator

#: set while ``to_model()`` validates an object's own values: they were checked when assigned or loaded
_trusted: ContextVar[bool] = ContextVar("dal_model_of_an_object", default=False)


class Origin:
    """What ``to_model()`` made a model from: the object's guid and, by stored name, the JSON form (the
    model's dump) of each field the object held as loaded (an unsaved change is left out: it is the
    model's own). Bookkeeping, not a value: equal to any other, so two models of equal values are equal."""

    __slots__ = ("guid", "values")

    def __init__(self, guid: str, values: dict[str, Any]) -> None:
        self.guid, self.values = guid, values

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, Origin)

    __hash__ = None  # type: ignore[assignment]


class HybridModel(BaseModel):
    """The base of every hybrid's model: no field of its own, the ``to_model()`` origin kept aside."""

    #: no protected names (the ones pydantic needs are renamed, any other ``model_...`` is a plain field);
    #: dumps write the stored names (an alias only where a field was renamed)
    model_config = ConfigDict(protected_namespaces=(), serialize_by_alias=True)
    _dal_origin: Origin | None = PrivateAttr(default=None)


def checked(kind: Any, check: Validator) -> Any:
    """Return ``kind`` annotated to admit what assigning admits (or its JSON form): see the module."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return handler(value if _trusted.get() else admitted(check, value))

    return Annotated[kind, WrapValidator(validate)]


def admitted(check: Validator, value: Any) -> Any:
    """Return ``value`` as assigning it gives it; a typed value may also be given as its JSON form.
    InvalidValueError (a ValueError: pydantic's ValidationError) otherwise, the assignment's."""
    try:
        return check(value)
    except InvalidValueError as refused:
        if check.native or check.adapter is None:  # its JSON form is the value itself: nothing more
            raise
        try:  # NaN stays NaN, which JSON refuses
            text = json.dumps(_json_form(value), allow_nan=False)
            parsed = check.adapter.validate_json(text, strict=True)
        except (TypeError, ValueError, RecursionError):
            raise refused from None
        return check(parsed)


def _json_form(value: Any) -> Any:
    """Return ``value`` if it is JSON data, in which a model or a dataclass stands for its fields (another
    class, a subclass: its JSON form); TypeError for anything else (bytes, a set, a tuple, a datetime...)."""
    kind = type(value)
    if value is None or kind in (str, int, float, bool):
        return value
    if kind is list:
        return [_json_form(item) for item in value]
    if kind is dict and all(type(key) is str for key in value):
        return {key: _json_form(item) for key, item in value.items()}
    if isinstance(value, BaseModel) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return to_jsonable_python(value)
    raise TypeError(f"no JSON data: {kind.__name__}")


def trusted_validation(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """Return ``model.model_validate(values)`` of an object's own values, pydantic's checks only."""
    token = _trusted.set(True)
    try:
        return model.model_validate(values)
    finally:
        _trusted.reset(token)


def remember(obj: Any, meta: HybridMeta, model: BaseModel) -> None:
    """Keep on ``model`` (made by ``to_model()`` from ``obj``) the :class:`Origin` ``from_model`` merges
    with; none for a new object (``from_model`` makes it anew) or one whose values no longer encode."""
    if obj._raw is None or not isinstance(model, HybridModel):
        return
    try:
        dumped = model.model_dump(mode="json")
        stored, ours = decode(obj._raw), obj._document()
        # changed as read, not as spelt: a value stored otherwise than this version writes it is as loaded
        unsaved = set(edited_since(meta, stored, ours, obj._extra))
    except Exception:  # a value pydantic or the document cannot write: to_model() refused what matters
        return
    loaded = {name: value for name, value in dumped.items() if name not in unsaved}
    model._dal_origin = Origin(obj.guid, loaded)


def changed_on(model: BaseModel, guid: str, values: dict[str, Any]) -> dict[str, Any]:
    """Return the ``values`` (of the model, by stored name) ``from_model`` assigns to the stored object
    of ``guid``: all of them, or, for a model ``to_model()`` made of it, those the model changed."""
    if not isinstance(model, HybridModel) or model._dal_origin is None or model._dal_origin.guid != guid:
        return values
    # used up: handed again (after its changes were written, and maybe changed back), the model writes
    # every field it was given, never comparing with what it was made from before its own writes
    origin, model._dal_origin = model._dal_origin, None
    try:
        now = model.model_dump(mode="json")
    except Exception:  # what cannot be compared is assigned, as without an origin
        return values
    return {name: value for name, value in values.items()
            if name not in origin.values or not same(now.get(name), origin.values[name])}


def values_of(label: str, model: BaseModel, kept: frozenset[str], aliased: bool) -> dict[str, Any]:
    """Return the values of a model ``from_model`` takes, by field name (a hybrid's model: by stored
    name, its alias) as ``model_dump()`` gives them, of the fields the model was given
    (``model_fields_set``; a computed field is always given; the guid is always taken): a nested model
    of another class or a subclass as its fields, an excluded field left out. Except where the hybrid
    declares a dataclass (``kept``): the dump turns it into a dict the strict assignment refuses, so the
    model's attribute is taken, as validated. The assignment copies each value: the object shares
    nothing with the model. ``aliased``: the model has a renamed field, dumped by alias."""
    try:
        values = dict(model.model_dump(by_alias=True) if aliased else model.model_dump())
    except Exception as exc:  # pydantic's serialization errors, a computed field's own (AttributeError...)
        raise InvalidValueError(
            f"{label}.from_model() cannot read the model's values: model_dump() raised {type(exc).__name__}: "
            f"{exc}; pass a model built validated ({label}.model().model_validate(data)), not "
            "model_construct()") from exc
    dumped_by_alias = aliased or bool(type(model).model_config.get("serialize_by_alias"))
    given = model.model_fields_set
    for name, field in type(model).model_fields.items():
        key = (field.serialization_alias or field.alias or name) if dumped_by_alias else name
        if key not in values or key == "guid":
            continue
        if name not in given:  # left at its default: not the model's to assign (PATCH-like)
            del values[key]
        elif key in kept:
            values[key] = getattr(model, name, values[key])
    return values
