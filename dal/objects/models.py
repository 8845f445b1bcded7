"""Pydantic models of hybrids: ``Cls.model()``, ``obj.to_model()``, ``Cls.from_model(m)``; and the
JSON-ready view of an object, ``obj.serialize(depth)``.

A hybrid's model holds its ``guid``, its properties (typed as declared: an enum of allowed values
is a ``Literal``, or, when some are lists or dicts, a field its property's validator checks) and the
guid of each relation (``<relation>_guid``); never dynamics or reverse
relations. A mandatory field is not nullable, and required unless it has a default; any other
field may be ``None``. One model class per hybrid, built on first use and kept. Its fields admit
what assigning admits (or, for a type stored as text, its JSON form), and ``from_model`` assigns only
what a model was given, or changed since ``to_model()`` made it: see :mod:`dal.objects.model_values`.

A property named like one of pydantic's own ``model_*`` members (``model_config``, ``model_dump``),
which pydantic refuses or which would hide the member, is the field ``<name>_`` (``_`` added until
the name is free) under the alias ``<name>``: validated, dumped and described by its stored name.
Other names of ``BaseModel`` members (``json``, ``copy``, ``schema``: pydantic 1's methods) stay
plain fields, shadowing the method, as pydantic allows, without its warning.
"""

from __future__ import annotations

import copy
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Optional

from pydantic import BaseModel, Field, PlainValidator, Strict, ValidationError, WithJsonSchema, create_model

from dal.config import current
from dal.exceptions import InvalidValueError, MissingMandatoryFieldsError, ObjectNotFoundError
from dal.model.registry import hybrids
from dal.model.trees import tree_kin
from dal.objects.mirrored import shown_as_parsed
from dal.objects.model_values import HybridModel, changed_on, checked, remember, trusted_validation, values_of
from dal.objects.refusals import changeable, check_containers
from dal.objects.transaction import decode
from dal.structures import Dynamic, MirrorField, Property, check_guid
from dal.values import identical, json_copy, same

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta
    from dal.validators import Validator

#: the deepest ``serialize(depth)``: each level is a few frames of recursion, and a self-link
#: would nest until Python's recursion limit (a RecursionError) at a few hundred
MAX_DEPTH = 100
#: a guid field (the object's, a relation's) admits a str only, as assigning does (no bytes)
_GUID = Annotated[str, Strict()]
#: BaseModel's own members pydantic refuses as field names, or that a field would hide from pydantic
#: and its users (``model_fields_set``, ``model_dump``): such a field takes another name, aliased
_PYDANTIC_OWN = frozenset(name for name in dir(BaseModel) if name.startswith("model_"))
#: pydantic 1's methods: a field may shadow them, and pydantic warns that it does
_SHADOWABLE = frozenset(name for name in dir(BaseModel) if not name.startswith("_")) - _PYDANTIC_OWN


class _Built(NamedTuple):
    model: type[BaseModel]
    #: typed properties: a value that can change in place is validated again and copied
    typed: tuple[tuple[str, Validator], ...]
    #: ``list`` and ``dict`` properties: their values are checked for what JSON cannot store, and copied
    plain: tuple[str, ...]
    #: the typed properties whose value ``to_model`` copies (an enum's check copies its own)
    copied: frozenset[str]
    #: the typed properties holding a dataclass (at any depth): ``from_model`` takes the model's attribute
    kept: frozenset[str]


_models: weakref.WeakKeyDictionary[type, _Built] = weakref.WeakKeyDictionary()
#: the models with a renamed field: ``from_model`` dumps them by alias whatever pydantic's version
_aliased: weakref.WeakSet[type[BaseModel]] = weakref.WeakSet()
_lock = threading.Lock()
#: per hybrid, the properties ``serialize()`` copies (see ``_shared``)
_views: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()


def model_of(hybrid: type, meta: HybridMeta) -> type[BaseModel]:
    """Return the pydantic model class of a hybrid (built once per class)."""
    return _built(hybrid, meta).model


def _built(hybrid: type, meta: HybridMeta) -> _Built:
    with _lock:
        built = _models.get(hybrid)
        if built is None:
            built = _models[hybrid] = _build(meta)
        return built


def _build(meta: HybridMeta) -> _Built:
    fields: dict[str, Any] = {"guid": (_GUID, Field(description=f"The guid of the {meta.cls.__name__}."))}
    taken = {*meta.fields(), *dir(BaseModel)}
    for name, prop in meta.properties.items():
        fields[_free(name, taken)] = _field(_python_type(prop), prop.mandatory, prop.default, prop.doc, name)
    for relation in meta.relations.values():
        target = relation.target.__name__ if relation.target is not None else str(relation.foreign_type)
        doc = relation.doc or f"The guid of the linked {target}."
        # ``<relation>_guid`` is no pydantic member's name: it keeps its name
        fields[relation.guid_field] = _field(_GUID, relation.mandatory, None, doc, relation.guid_field)
    model = _create(meta, fields)
    if any(name not in meta.field_set for name in fields if name != "guid"):
        _aliased.add(model)
    plain = tuple(name for name, prop in meta.properties.items() if _plain_container(prop))
    copied = frozenset(name for name, check in meta.converters if check.enum is None)
    kept = frozenset(name for name, check in meta.converters if check.dataclasses)
    return _Built(model, meta.converters, plain, copied, kept)


def _create(meta: HybridMeta, fields: dict[str, Any]) -> type[BaseModel]:
    def create() -> type[BaseModel]:
        return create_model(meta.cls.__name__, __doc__=meta.cls.__doc__, __module__=meta.cls.__module__,
                            __base__=HybridModel, **fields)

    if _SHADOWABLE.isdisjoint(fields):
        return create()
    # a field named like one of pydantic 1's methods shadows it, as intended, but pydantic warns (and a
    # test run that fails on warnings fails); catch_warnings swaps the process's filters: only then
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r'Field name ".*" shadows an attribute in parent "HybridModel"',
                                UserWarning)
        return create()


def _free(name: str, taken: set[str]) -> str:
    """Return the model's name for field ``name``: itself, unless it is one of pydantic's own."""
    if name not in _PYDANTIC_OWN:
        return name
    free = f"{name}_"
    while free in taken:
        free += "_"
    taken.add(free)
    return free


def _field(kind: Any, mandatory: bool, default: Any, doc: str | None, stored: str) -> tuple[Any, Any]:
    extra: dict[str, Any] = {"description": doc}
    if stored in _PYDANTIC_OWN:
        extra["alias"] = stored
    if mandatory:
        return kind, (Field(**extra) if default is None else Field(default=default, **extra))
    return Optional[kind], Field(default=default, **extra)  # noqa: UP045 -- built at runtime


def _python_type(prop: Property[Any]) -> Any:
    """Return a property's field type: its declared type, or an enum's ``Literal``, checked as assigning
    checks it (``model_values.checked``), or, for an enum of lists or dicts, by the property's check."""
    allowed = prop.validator.enum  # the allowed values as stored (an Enum member as its value)
    if allowed is None:
        return checked(prop.property_type, prop.validator)
    try:
        hash(allowed)
    except TypeError:  # a list or a dict cannot be a Literal's: the property's own check, exact as ever
        check = prop.validator
        # a copy, as pydantic's list and dict fields make: the model must not share the object's list
        valid = PlainValidator(lambda value: copy.deepcopy(check(value)))
        return Annotated[Any, valid, WithJsonSchema({"enum": list(allowed)})]
    return checked(Literal[allowed], prop.validator)


def missing_mandatory(meta: HybridMeta, data: dict[str, Any]) -> list[str]:
    """Return the mandatory properties and relations an object's values (``data``) hold None for:
    ``save()`` refuses them, as ``to_model()`` does."""
    missing = [name for name, prop in meta.properties.items() if prop.mandatory and data[name] is None]
    missing += [name for name, link in meta.relations.items()
                if link.mandatory and data[link.guid_field] is None]
    return missing


def to_model(obj: Any) -> BaseModel:
    """Return a hybrid object as an instance of its model (its current values, saved or not); a stale
    mirrored object refreshes first, as on any read (a failed refresh serves what is stored)."""
    obj._before_read_if_mirrored()
    meta: HybridMeta = obj._meta
    label = f"{type(obj).__name__}.to_model()"
    missing = missing_mandatory(meta, obj._data)
    if missing:  # the model requires them, as save() does
        raise MissingMandatoryFieldsError(
            f"{label}: the model requires {', '.join(missing)}, which {type(obj).__name__} {obj.guid} does "
            f"not hold yet; set {'it' if len(missing) == 1 else 'them'} first", tuple(missing))
    built = _built(type(obj), meta)
    values = {"guid": obj.guid, **{name: obj._data[name] for name in meta.fields()}}
    values.update(_copies(label, obj, built))
    try:
        model = trusted_validation(built.model, values)
    except ValidationError as exc:  # changed in place (assigning did not see it), or stored so
        wrong = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        raise _not_admitted(label, ", ".join(wrong), exc.errors()[0]["msg"]) from None
    remember(obj, meta, model)  # what from_model() merges with
    return model


def _not_admitted(label: str, names: str, problem: str) -> InvalidValueError:
    return InvalidValueError(
        f"{label}: {names} holds a value its type does not admit ({problem}): changed in place, which "
        "assigning would have refused, or stored by an earlier version of the model (a load serves a "
        "plain value as stored; `dal check` lists them): assign a value of its declared type")


def _copies(label: str, obj: Any, built: _Built) -> dict[str, Any]:
    """Return a copy of each value of ``obj`` its model would otherwise share (pydantic keeps a nested
    model as is, and the items of a list or a dict); refuse, as ``save()`` does, naming the field, a
    value changed in place that ``save()`` would refuse, rather than a model whose JSON alters it.

    A typed value whose JSON form is still its stored form was validated when loaded (or saved), and
    ``save()`` does not check it again either: only the others pay for their type's whole check (a few
    microseconds). The stored form read afresh is the copy: faster than ``copy.deepcopy``. Compared as
    stored values, not with ``==``: a datetime of another offset, a ``Decimal('1.0')`` for ``'1.00'``,
    equal but stored otherwise, is a change ``save()`` writes, and the model must hold it.
    """
    data = obj._data
    copies: dict[str, Any] = {}
    stored: dict[str, Any] | None = None
    for name, check in built.typed:
        value = data[name]
        if not changeable(value):
            continue
        if stored is None:
            stored = decode(obj._raw) if obj._raw is not None else {}
        if name in stored and _still_stored(check, value, stored[name]):
            if name not in built.copied:
                continue
            try:
                copies[name] = check.from_json(stored[name])
                continue
            except ValueError:  # stored by a version whose type read it otherwise: checked below
                pass
        try:  # save()'s check (refusals.check_typed), in to_model()'s words
            check(value)
        except InvalidValueError as exc:
            raise _not_admitted(label, name, str(exc)) from None
        if name in built.copied:  # validated: its stored form reads back as the value itself
            copies[name] = check.from_json(check.to_json(value))
    check_containers(label, data, built.plain)
    copies.update((name, json_copy(data[name])) for name in built.plain)
    return copies


def _still_stored(check: Validator, value: Any, stored: Any) -> bool:
    """Tell whether ``value``'s JSON form is ``stored`` (False when it has none: ``check`` then says why).

    ``identical``, not ``same``: on JSON values they agree (types at any depth, dicts in any order,
    ``-0.0`` is ``0.0``), and a walk of both is some 1.4-2.5x quicker than writing both as canonical text."""
    try:
        return identical(check.to_json(value), stored)
    except Exception:  # changed in place into what its type cannot write (pydantic's errors, TypeError...)
        return False


def from_model(hybrid: type, meta: HybridMeta, model: BaseModel) -> Any:
    """Return the object a model describes: the stored one with the model's values assigned, or a new one.

    Only the fields the model was given are assigned, and of a model ``to_model()`` made, only those it
    changed (``model_values``). Each value is validated as an assignment; ``save()`` then stores it
    (merging, for a stored object, with what others changed meanwhile). A model without a guid makes a
    new object, its other fields the hybrid's defaults.
    """
    name = meta.cls.__name__
    if not isinstance(model, BaseModel):
        raise InvalidValueError(
            f"{name}.from_model() takes a pydantic model, not a {type(model).__name__}; for a dict `data`, "
            f"pass {name}.model().model_validate(data), which checks its values as assigning them does "
            "(a JSON body's ISO dates and UUID strings admitted)")
    values = values_of(name, model, _built(hybrid, meta).kept, type(model) in _aliased)
    guid = values.pop("guid", None)
    if guid is not None:
        check_guid(guid, f"{meta.cls.__name__}.from_model(...): the model's guid")
        stored = meta.cls._load_many([guid]).get(guid)
        if stored is not None:
            changed = changed_on(model, guid, values)
            # a body from before a refresh (its info is no longer the stored one): a parsed property it
            # holds as that info shows it is the GET's, not the client's (a model to_model() made tells
            # its own changes; a body whose info is current is taken whole, as any other hybrid's)
            refreshed = meta.mirror is not None and changed is values and not same(
                values.get("info"), stored._data.get("info"))
            shown = shown_as_parsed(hybrid, values) if refreshed else frozenset()
            stored._fill(_unmirrored(meta, changed, shown))
            return stored
        _refuse_kin(meta, guid)
    obj = hybrid(data=_unmirrored(meta, values, frozenset()))
    if guid is not None:
        obj.__dict__["guid"] = guid
    return obj


def _refuse_kin(meta: HybridMeta, guid: str) -> None:
    """Refuse a new object of a guid another hybrid of its class tree stores: one guid names one object across
    a hybrid and its subclass hybrids (a reverse list spanning them tells their objects apart by guid)."""
    context = current()
    kin = tree_kin(meta.cls)
    stored = context.persistent.get_many([context.keys.doc(other, guid) for other in kin]) if kin else {}
    for other in kin:  # one read of them all
        if context.keys.doc(other, guid) in stored:
            name, holder = meta.cls.__name__, hybrids.get(other).__name__
            raise InvalidValueError(
                f"{name}.from_model(...): the model's guid {guid} is stored as a {holder}, another hybrid of "
                f"{name}'s class tree, where one guid names one object; give the model no guid to make a new "
                f"{name}")


def _unmirrored(meta: HybridMeta, values: dict[str, Any], shown: frozenset[str]) -> dict[str, Any]:
    """Return ``values`` without a mirrored hybrid's ``info``, ``cached_at`` and ``error``: a full body
    of what ``to_model()`` gave holds them, and a refresh since then changes them; written only by
    refreshes, they are never taken from a body (as a REST API ignores its read-only fields). Nor are
    the parsed properties named in ``shown`` (:func:`~dal.objects.mirrored.shown_as_parsed`), which hold
    what the body's ``info`` gives: a refresh since may have written them too; one the client changed
    is taken."""
    if meta.mirror is None:
        return values
    return {name: value for name, value in values.items()
            if name not in shown and not isinstance(meta.properties.get(name), MirrorField)}


def check_depth(depth: object) -> None:
    """Refuse a ``serialize()`` depth that is not an int from 0 to :data:`MAX_DEPTH`."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise InvalidValueError(f"serialize(depth={depth!r}): depth is an int from 0 (guids of related "
                                f"objects) to {MAX_DEPTH} (related objects nested so deep)")


def exported(obj: Any) -> dict[str, Any]:
    """Return ``obj.export()``: each property's value, a copy where it can change in place (a list, a
    dict, a model), so that editing the view never edits the object or what its next ``save()`` stores."""
    data, meta = obj._data, obj._meta
    typed = meta.typed  # values that are no JSON (models, lists of them): copied whole
    view = {}
    for name in meta.properties:
        value = data[name]
        view[name] = json_copy(value) if name not in typed else (
            copy.deepcopy(value) if changeable(value) else value)
    return view


def _shared(hybrid: type, meta: HybridMeta) -> frozenset[str]:
    """Return the properties whose JSON form (``_document()``) is the object's own value, which can change
    in place: lists and dicts, and an enum of lists or dicts (stored as given). A typed value's JSON
    form is built afresh by its ``to_json``; a str, a number or an enum of them never changes."""
    names = _views.get(hybrid)
    if names is None:  # two threads may both build it: the same set
        names = _views[hybrid] = frozenset(
            name for name, prop in meta.properties.items()
            if (prop.validator.enum is not None and not prop.validator.native) or _plain_container(prop))
    return names


def _plain_container(prop: Property[Any]) -> bool:
    """Tell whether a property holds a plain ``list`` or ``dict`` (no declared item type)."""
    return prop.validator.native and prop.validator.enum is None and prop.property_type in (list, dict)


def serialized(obj: Any, depth: int, dynamics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return ``obj`` as a JSON-ready dict: guid, properties, relations (nested when ``depth > 0``),
    dynamics (their values given in ``dynamics`` when read already, see :func:`serialized_all`). A related
    object deleted (by another process) before ``obj`` first read the relation is None, as its link is
    once the delete's ``abandon`` clears it: one gone object does not fail a whole list. One read already
    is nested as read, unchecked: checking would cost a round trip per object, where a list's objects now
    share one batched load (``refresh()`` forgets it)."""
    check_depth(depth)
    obj._before_read_if_mirrored()
    meta: HybridMeta = obj._meta
    result: dict[str, Any] = {"guid": obj.guid}
    # the document holds the object's own list or dict where the JSON form is the value itself, which a
    # caller editing the view would otherwise change, and the next save() store: those are copied
    shared = _shared(type(obj), meta)
    result.update((name, json_copy(value) if name in shared else value)
                  for name, value in obj._document().items() if name in meta.properties)
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
        result[name] = spec.validator.to_json(getattr(obj, name) if dynamics is None else dynamics[name])
    return result


def serialized_all(objs: Sequence[Any], depth: int,
                   read_many: Callable[[Sequence[Any], Dynamic], list[Any]]) -> list[dict[str, Any]]:
    """Return ``serialized(obj, depth)`` of each of ``objs``, each dynamic of each hybrid's objects read for
    them together by ``read_many`` (:func:`dal.objects.dynamics.read_many`: one multi-get of the cached
    values), after each object's mirrored refresh, which ``serialized`` also does first."""
    check_depth(depth)
    values: list[dict[str, Any]] = [{} for _ in objs]
    groups: dict[Any, list[int]] = {}  # per hybrid class
    for index, obj in enumerate(objs):
        obj._before_read_if_mirrored()
        groups.setdefault(type(obj), []).append(index)
    for hybrid, indexes in groups.items():
        group = [objs[index] for index in indexes]
        for name, spec in hybrid._meta.dynamics.items():
            for index, value in zip(indexes, read_many(group, spec), strict=True):
                values[index][name] = value
    return [serialized(obj, depth, values[index]) for index, obj in enumerate(objs)]
