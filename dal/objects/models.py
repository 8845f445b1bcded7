"""Pydantic models of hybrids: ``Cls.model()``, ``obj.to_model()``, ``Cls.from_model(m)``; and the
JSON-ready view of an object, ``obj.serialize(depth)``.

A hybrid's model holds its ``guid``, its properties (typed as declared: an enum of allowed values
is a ``Literal``, or, when some are lists or dicts, a field its property's validator checks) and the
guid of each relation (``<relation>_guid``); never dynamics or reverse
relations. A mandatory field is not nullable, and required unless it has a default; any other
field may be ``None``. One model class per hybrid, built on first use and kept.
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

from pydantic import BaseModel, Field, PlainValidator, ValidationError, WithJsonSchema, create_model

from dal.exceptions import InvalidValueError, MissingMandatoryFieldsError, ObjectNotFoundError
from dal.structures import Property, check_guid

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

#: the deepest ``serialize(depth)``: each level is a few frames of recursion, and a self-link
#: would nest until Python's recursion limit (a RecursionError) at a few hundred
MAX_DEPTH = 100
_models: weakref.WeakKeyDictionary[type, type[BaseModel]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def model_of(hybrid: type, meta: HybridMeta) -> type[BaseModel]:
    """Return the pydantic model class of a hybrid (built once per class)."""
    with _lock:
        model = _models.get(hybrid)
        if model is None:
            model = _models[hybrid] = _build(meta)
        return model


def _build(meta: HybridMeta) -> type[BaseModel]:
    fields: dict[str, Any] = {"guid": (str, Field(description=f"The guid of the {meta.cls.__name__}."))}
    for name, prop in meta.properties.items():
        fields[name] = _field(_python_type(prop), prop.mandatory, prop.default, prop.doc)
    for relation in meta.relations.values():
        target = relation.target.__name__ if relation.target is not None else str(relation.foreign_type)
        fields[relation.guid_field] = _field(str, relation.mandatory, None,
                                             relation.doc or f"The guid of the linked {target}.")
    model: type[BaseModel] = create_model(
        meta.cls.__name__, __doc__=meta.cls.__doc__, __module__=meta.cls.__module__, **fields)
    return model


def _field(kind: Any, mandatory: bool, default: Any, doc: str | None) -> tuple[Any, Any]:
    if mandatory:
        return kind, (Field(description=doc) if default is None else Field(default=default, description=doc))
    return Optional[kind], Field(default=default, description=doc)  # noqa: UP045 -- built at runtime


def _python_type(prop: Property[Any]) -> Any:
    allowed = prop.validator.enum  # the allowed values as stored (an Enum member as its value)
    if allowed is None:
        return prop.property_type
    try:
        hash(allowed)
    except TypeError:  # a list or a dict cannot be a Literal's: the property's own check, exact as ever
        check = prop.validator
        # a copy, as pydantic's list and dict fields make: the model must not share the object's list
        valid = PlainValidator(lambda value: copy.deepcopy(check(value)))
        return Annotated[Any, valid, WithJsonSchema({"enum": list(allowed)})]
    return Literal[allowed]


def missing_mandatory(meta: HybridMeta, data: dict[str, Any]) -> list[str]:
    """Return the mandatory properties and relations an object's values (``data``) hold None for:
    ``save()`` refuses them, as ``to_model()`` does."""
    missing = [name for name, prop in meta.properties.items() if prop.mandatory and data[name] is None]
    missing += [name for name, link in meta.relations.items()
                if link.mandatory and data[link.guid_field] is None]
    return missing


def to_model(obj: Any) -> BaseModel:
    """Return a hybrid object as an instance of its model (its current values, saved or not)."""
    meta: HybridMeta = obj._meta
    label = f"{type(obj).__name__}.to_model()"
    missing = missing_mandatory(meta, obj._data)
    if missing:  # the model requires them, as save() does
        raise MissingMandatoryFieldsError(
            f"{label}: the model requires {', '.join(missing)}, which {type(obj).__name__} {obj.guid} does "
            f"not hold yet; set {'it' if len(missing) == 1 else 'them'} first", tuple(missing))
    values = {"guid": obj.guid, **{name: obj._data[name] for name in meta.fields()}}
    try:
        return model_of(type(obj), meta).model_validate(values)
    except ValidationError as exc:  # a list or a model changed in place, which assigning did not check
        wrong = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        raise InvalidValueError(
            f"{label}: {', '.join(wrong)} holds a value its type does not admit ({exc.errors()[0]['msg']}); "
            "changed in place, it was not validated: assign a value of its declared type") from None


def from_model(hybrid: type, meta: HybridMeta, model: BaseModel) -> Any:
    """Return the object a model describes: the stored one with the model's values assigned, or a new one.

    Each value is validated as an assignment; ``save()`` then stores it (merging, for a stored object,
    with what others changed meanwhile). A model without a guid makes a new object.
    """
    if not isinstance(model, BaseModel):
        name = meta.cls.__name__
        raise InvalidValueError(
            f"{name}.from_model() takes a pydantic model, not a {type(model).__name__}; for a dict `data`, "
            f"pass {name}.model().model_validate(data), which also checks its values")
    values = dict(model.model_dump())
    guid = values.pop("guid", None)
    if guid is not None:
        check_guid(guid, f"{meta.cls.__name__}.from_model(...): the model's guid")
        stored = meta.cls._load_many([guid]).get(guid)
        if stored is not None:
            stored._fill(values)
            return stored
    obj = hybrid(data=values)
    if guid is not None:
        obj.__dict__["guid"] = guid
    return obj


def check_depth(depth: object) -> None:
    """Refuse a ``serialize()`` depth that is not an int from 0 to :data:`MAX_DEPTH`."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise InvalidValueError(f"serialize(depth={depth!r}): depth is an int from 0 (guids of related "
                                f"objects) to {MAX_DEPTH} (related objects nested so deep)")


def serialized(obj: Any, depth: int) -> dict[str, Any]:
    """Return ``obj`` as a JSON-ready dict: guid, properties, relations (nested when ``depth > 0``),
    dynamics. A related object deleted since ``obj`` was loaded (by another process) is None, as
    its link is once the delete's ``abandon`` clears it: one gone object does not fail a whole list."""
    check_depth(depth)
    obj._before_read_if_mirrored()
    meta: HybridMeta = obj._meta
    result: dict[str, Any] = {"guid": obj.guid}
    result.update((name, value) for name, value in obj._document().items() if name in meta.properties)
    for name, relation in meta.relations.items():
        if depth > 0:
            try:
                related = obj._related(relation)
            except ObjectNotFoundError:
                related = None
            result[name] = None if related is None else related.serialize(depth - 1)
        else:
            result[relation.guid_field] = obj._data[relation.guid_field]
    for name, spec in meta.dynamics.items():
        result[name] = spec.validator.to_json(getattr(obj, name))
    return result
