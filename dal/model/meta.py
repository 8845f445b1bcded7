"""The hybrid metaclass and the ``_meta`` record it builds (the registry is :mod:`dal.model.registry`).

The metaclass only collects: it reads the name-mangled ``__properties``, ``__relations``
and ``__dynamics`` lists (and a mirrored hybrid's ``__mirror``, which adds the fields every
mirrored object stores) once, merges inherited specs, binds them (each spec is the
descriptor for its attribute), freezes the result into ``cls._meta`` and registers the
class. Nothing is installed on a class when objects are created.

The model names :class:`~dal.objects.dataobject.DataObject` (the class a ``_meta`` describes)
in annotations only: one of the annotation-only upward references docs/architecture.md lists.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from typing_extensions import dataclass_transform

from dal.exceptions import ConfigurationError, InvalidValueError, NotAHybridError
from dal.model.declared import KINDS, Declared, add_annotated, internal_field
from dal.model.expressions import FieldExpression
from dal.model.mirroring import mirror_of
from dal.model.registry import Reverse, hybrids
from dal.model.reserved import check_name, defined_by
from dal.structures import MIRROR_STATE, Dynamic, Mirror, Property, Relation, RelationGuid, Spec
from dal.validators import Validator

if TYPE_CHECKING:
    from dal.objects.dataobject import DataObject

#: a hybrid's logical name, a component of every key of its objects: no ``/`` (the key separator),
#: no whitespace, nothing a shell, a URL or a memcached key would mangle, and short enough to leave
#: room for the rest of a key
HYBRID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
#: the spec lists a hybrid declares (name-mangled in the class body) and the spec each one holds
SPEC_LISTS = {"properties": Property, "relations": Relation, "dynamics": Dynamic}


@dataclass(frozen=True, eq=False)
class HybridMeta:
    """Everything dal knows about one hybrid: what the ERD, migrations and queries read.

    Compared and hashed by identity: one record per hybrid class, which per-process state may
    key weakly (:mod:`dal.objects.schema`).
    """

    name: str
    cls: type[DataObject]
    properties: Mapping[str, Property[Any]]
    relations: Mapping[str, Relation]
    dynamics: Mapping[str, Dynamic]
    #: reverse accessors other hybrids' relations install here, filled as they register
    reverse: dict[str, Reverse] = field(default_factory=dict)
    #: how a mirrored hybrid follows its remote (``__mirror``, declared or inherited); None if not mirrored
    mirror: Mirror | None = None

    @cached_property
    def unique(self) -> tuple[Property[Any], ...]:
        return tuple(p for p in self.properties.values() if p.unique)

    @cached_property
    def indexed(self) -> tuple[Property[Any], ...]:
        return tuple(p for p in self.properties.values() if p.indexed)

    def fields(self) -> tuple[str, ...]:
        """Return the stored field names: properties, then ``<relation>_guid``."""
        return tuple(self.properties) + tuple(r.guid_field for r in self.relations.values())

    @cached_property
    def field_set(self) -> frozenset[str]:
        return frozenset(self.fields())

    @cached_property
    def assignable(self) -> frozenset[str]:
        """Names ``Cls(data=...)`` accepts: stored fields and relations."""
        return self.field_set | frozenset(self.relations)

    @cached_property
    def stored_defaults(self) -> Mapping[str, Any]:
        """What each stored field reads as (in JSON form) from a document that lacks it."""
        defaults = {name: prop.validator.to_json(prop.default) for name, prop in self.properties.items()}
        defaults.update((relation.guid_field, None) for relation in self.relations.values())
        return MappingProxyType(defaults)

    def with_defaults(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``document`` (JSON form) with every declared field it lacks at its default."""
        missing = {name: copy.deepcopy(default) for name, default in self.stored_defaults.items()
                   if name not in document}  # copies: a default list must never be shared
        return {**document, **missing} if missing else dict(document)

    @cached_property
    def converters(self) -> tuple[tuple[str, Validator], ...]:
        """Properties whose stored JSON differs from their Python value (datetime, models, ...)."""
        return tuple((name, prop.validator) for name, prop in self.properties.items()
                     if not prop.validator.native)

    @cached_property
    def typed(self) -> dict[str, Validator]:
        """:attr:`converters` by name."""
        return dict(self.converters)


class HybridMetaclass(type):
    """Collect a hybrid's specs into ``_meta`` and register it.

    Read on the class, a field is a :class:`~dal.model.expressions.FieldExpression`
    (``Backend.status == 'RUNNING'``). ``abstract=True`` makes a base that is not a hybrid: its specs
    (and those it inherits) are read and checked as a hybrid's are, kept unbound in ``_abstract_specs``,
    and each hybrid deriving from it gets its own copies, as it does its hybrid parents' specs; its
    ``__mirror`` (kept in ``_abstract_mirror``) makes each of them mirrored.
    """

    _meta: HybridMeta

    if not TYPE_CHECKING:  # hidden from type checkers, which would take any class attribute as valid
        def __getattr__(cls, name: str) -> Any:
            if name == "guid" and "_meta" in vars(cls):  # objects hold theirs; the class gives the field
                return FieldExpression(None, "guid", None, cls)
            if name == "_meta" or name in _abstract_names(cls):  # only ever asked when the lookup failed
                _refuse_not_a_hybrid(cls, name)
            raise AttributeError(f"type object {cls.__name__!r} has no attribute {name!r}")

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any],
                hybrid_name: str | None = None, abstract: bool = False, **kwargs: Any) -> HybridMetaclass:
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        if not any(isinstance(base, HybridMetaclass) for base in bases):
            return cls  # DataObject itself
        mangled = f"_{name.lstrip('_')}__"
        if abstract and hybrid_name is not None:  # it would name nothing: no object is stored under it
            raise ConfigurationError(f"{name} is abstract=True, so it stores nothing and hybrid_name="
                                     f"{hybrid_name!r} would name nothing: give hybrid_name to the hybrids "
                                     "deriving from it")
        if not abstract:
            _check_hybrid_name(name, hybrid_name)
        _check_unread_specs(cls, namespace, mangled)
        _check_unread_mirror(cls, namespace, mangled)
        declared = {kind: list(namespace.get(mangled + kind, ()))
                    for kind in ("properties", "relations", "dynamics")}
        add_annotated(name, namespace, declared)
        specs = _merge(cls, bases, declared)
        mirror = mirror_of(cls, bases, namespace.get(mangled + "mirror"), declared, specs, abstract)
        _check_shadowing(cls, specs)
        if issubclass(mcs, TypedMetaclass):
            _refuse_data_field(name, specs)
        if abstract:  # TypedObject, a user's base: no _meta, not registered, nothing bound
            cls._abstract_specs = tuple(specs)  # type: ignore[attr-defined]
            cls._abstract_mirror = mirror  # type: ignore[attr-defined]
            for attribute in [key for key, value in namespace.items() if isinstance(value, Declared)]:
                delattr(cls, attribute)  # read on the base, a field says it is no hybrid's (__getattr__)
            return cls
        meta = HybridMeta(
            name=hybrid_name or name.lower(), cls=cls,  # type: ignore[arg-type]
            properties=MappingProxyType({s.name: s for s in specs if isinstance(s, Property)}),
            relations=MappingProxyType({s.name: s for s in specs if isinstance(s, Relation)}),
            dynamics=MappingProxyType({s.name: s for s in specs if isinstance(s, Dynamic)}),
            mirror=mirror,
        )
        cls._meta = meta
        for spec in specs:
            spec.bind(cls)  # type: ignore[arg-type]
            # set on every spec, never left as copied: a spec shared with a mirrored hybrid keeps its flag
            spec.refreshes = (mirror is not None and not isinstance(spec, Dynamic)
                              and spec.name not in MIRROR_STATE)
            setattr(cls, spec.name, spec)
            if isinstance(spec, Relation):
                setattr(cls, spec.guid_field, RelationGuid(spec))
        cls._declared = (frozenset(meta.fields()) | frozenset(meta.relations)  # type: ignore[attr-defined]
                         | frozenset(meta.dynamics))
        hybrids.register(cls)  # type: ignore[arg-type]
        return cls


@dataclass_transform(kw_only_default=True, field_specifiers=(internal_field,))
class TypedMetaclass(HybridMetaclass):
    """``TypedObject``'s: for type checkers its hybrids are dataclasses (annotated fields: keywords)."""


def _abstract_names(cls: type) -> frozenset[str]:
    """Return the field names an abstract base declares or inherits, with each relation's ``<r>_guid``."""
    specs: tuple[Spec, ...] = vars(cls).get("_abstract_specs", ())
    return frozenset(name for spec in specs
                     for name in (spec.name, *([spec.guid_field] if isinstance(spec, Relation) else [])))


def _refuse_not_a_hybrid(cls: type, name: str) -> None:
    """Raise NotAHybridError when ``cls`` is ``DataObject`` or an abstract base (a class being built or
    anything else is left to the plain AttributeError)."""
    if "_abstract_specs" in vars(cls):
        what = "an abstract base (abstract=True)"
    elif not any(isinstance(base, HybridMetaclass) for base in cls.__bases__):
        what = "the base of every hybrid"
    else:
        return
    reading = f"{cls.__name__}.{name} was read: " if not name.startswith("_") else ""
    raise NotAHybridError(
        f"{reading}{cls.__name__} is {what}, not a hybrid: it has no objects, no stored fields, no queries "
        f"and no model; use a hybrid deriving from it (`class Store({cls.__name__}, hybrid_name='store')`)")


def _refuse_data_field(class_name: str, specs: list[Spec]) -> None:
    """Refuse a field named ``data`` on a TypedObject: to type checkers ``Cls(data=...)`` is DataObject's
    mapping of field values, which the field would replace with its own type, wrongly both ways."""
    if any(spec.name == "data" for spec in specs):
        raise ConfigurationError(
            f"{class_name}: a TypedObject's field may not be named 'data': {class_name}(data=...) is the "
            f"constructor's mapping of field values, so type checkers would refuse {class_name}(data="
            f"{{'data': ...}}) and pass {class_name}(data=value), which fails at run time; rename the field "
            "(payload, content), or declare the hybrid on DataObject and give it as data={'data': ...}")


def _check_hybrid_name(class_name: str, chosen: object) -> None:
    """Refuse a logical name that cannot be a key component (see HYBRID_NAME)."""
    name = class_name.lower() if chosen is None else chosen
    if isinstance(name, str) and HYBRID_NAME.fullmatch(name):
        return
    fix = "choose another" if chosen is not None else (
        f"it is the class name in lowercase; name it with `class {class_name}(DataObject, hybrid_name=...)`")
    raise ConfigurationError(
        f"hybrid name {name!r} of {class_name} is not allowed: a hybrid name is part of every key of its "
        "objects, so it must be 1 to 64 ASCII letters, digits, underscores and dashes, not starting with a "
        f"digit or a dash (no '/', '.', whitespace); {fix}")


def _check_unread_specs(cls: type, namespace: Mapping[str, Any], mangled: str) -> None:
    """Refuse specs under a name dal does not read (``__propertys``, ``_properties``, a mixin's list).

    They would be silently ignored, leaving a hybrid without the fields its author declared.
    """
    read = {mangled + kind for kind in SPEC_LISTS}
    places = [(cls, namespace)] + [(base, vars(base)) for base in cls.__mro__[1:]
                                   if not isinstance(base, HybridMetaclass) and base is not object]
    for owner, attributes in places:
        for attribute, value in attributes.items():
            kind = _spec_kind(value)
            annotated = isinstance(value, Declared)  # read from the hybrid's own body, only there
            if kind is None or (owner is cls and (attribute in read or annotated)):
                continue
            shown = attribute if owner is cls else f"{owner.__name__}.{attribute}"
            own_mangled = f"_{owner.__name__.lstrip('_')}__"
            if attribute.startswith(own_mangled):  # written `__something` in that class body
                shown += f" (`__{attribute.removeprefix(own_mangled)}` in the class body)"
            right = next(name for name, spec in SPEC_LISTS.items() if issubclass(kind, spec))
            where = "" if owner is cls else (f", which {cls.__name__} inherits from {owner.__name__}, not a "
                                             "hybrid (dal reads specs from hybrids only)")
            form = (f"`{attribute}: TYPE = {value!r}`" if annotated
                    else f"`__{right} = [{kind.__name__}(...), ...]`")
            raise ConfigurationError(
                f"{cls.__name__}: {shown} holds {kind.__name__} specs{where}, but dal reads them only from "
                f"{'annotations' if annotated else f'`__{right}`'} in the body of the hybrid itself, so they "
                f"would be ignored; declare them as {form} in {cls.__name__}")


def _check_unread_mirror(cls: type, namespace: Mapping[str, Any], mangled: str) -> None:
    """Refuse a ``Mirror`` under a name dal does not read (``mirror``, ``_mirror``, ``__mirrors``, a
    mixin's ``__mirror``): the hybrid would silently not be mirrored, and its objects never refresh."""
    places = [(cls, namespace)] + [(base, vars(base)) for base in cls.__mro__[1:]
                                   if not isinstance(base, HybridMetaclass) and base is not object]
    for owner, attributes in places:
        for attribute, value in attributes.items():
            if not isinstance(value, Mirror) or (owner is cls and attribute == mangled + "mirror"):
                continue
            own_mangled = f"_{owner.__name__.lstrip('_')}__"
            shown = (f"__{attribute.removeprefix(own_mangled)}" if attribute.startswith(own_mangled)
                     else attribute)
            where, fix = "", f"name it `__mirror` in {cls.__name__}"
            if owner is not cls:
                shown = f"{owner.__name__}.{shown}"
                where = (f" ({owner.__name__}, which {cls.__name__} inherits, is neither a hybrid nor an "
                         "abstract=True base)")
                fix = (f"declare `__mirror = Mirror(...)` in {cls.__name__}, or make {owner.__name__} a "
                       "DataObject with abstract=True")
            raise ConfigurationError(
                f"{cls.__name__}: `{shown}` holds a Mirror{where}, but dal reads one only from `__mirror` in "
                f"the body of a hybrid or an abstract=True base, so {cls.__name__} would not be mirrored; "
                f"{fix}")


def _spec_kind(value: object) -> type[Spec] | None:
    """Return the spec class ``value`` (a spec, a keyword-form spec, or a list or tuple holding some) is
    made of, or None."""
    if isinstance(value, Spec):
        return type(value)
    if isinstance(value, Declared):  # `x: str = Property()`, read only in a hybrid's own body
        return KINDS[value.kind]
    if isinstance(value, (list, tuple)):
        return next((kind for item in value if (kind := _spec_kind(item)) is not None), None)
    return None


def _inherited(base: type) -> tuple[Spec, ...]:
    """Return the specs ``base`` passes on: an abstract base's own record (read first: through
    inheritance it would also show a hybrid parent's ``_meta``), else a hybrid's ``_meta``."""
    if "_abstract_specs" in vars(base):
        return vars(base)["_abstract_specs"]  # type: ignore[no-any-return]
    parent: HybridMeta | None = getattr(base, "_meta", None)
    if parent is None:
        return ()
    return (*parent.properties.values(), *parent.relations.values(), *parent.dynamics.values())


def _merge(cls: type, bases: tuple[type, ...], declared: dict[str, list[Any]]) -> list[Spec]:
    """Return inherited specs (rebound copies) followed by this class's own, checked."""
    specs: dict[str, Spec] = {}
    for base in reversed(bases):
        for inherited in _inherited(base):
            specs[inherited.name] = inherited.copy_for(cls)
    own: set[str] = set()  # an inherited spec may be declared again (it is replaced), an own one not
    for kind, expected in (("properties", Property), ("relations", Relation), ("dynamics", Dynamic)):
        for spec in declared[kind]:
            if not isinstance(spec, expected):
                raise InvalidValueError(
                    f"{cls.__name__}.__{kind} must hold {expected.__name__} objects, not {spec!r}")
            check_name(cls, spec)
            if spec.name in specs and (spec.name in own or type(specs[spec.name]) is not type(spec)):
                raise InvalidValueError(
                    f"{cls.__name__}: {spec.name!r} is declared twice, as {specs[spec.name]!r} and {spec!r}")
            own.add(spec.name)
            # a spec object listed by two classes (a shared module constant) gets one copy each
            specs[spec.name] = spec.copy_for(cls) if spec.owner is not None else spec
    guid_fields = {s.guid_field for s in specs.values() if isinstance(s, Relation)}
    clash = guid_fields & set(specs)
    if clash:
        raise InvalidValueError(
            f"{cls.__name__}: {', '.join(sorted(clash))} collides with a relation's guid attribute")
    return list(specs.values())


def _check_shadowing(cls: type, specs: list[Spec]) -> None:
    """Refuse a field (a mirror's included) installed over a method, property or class attribute of the
    hybrid's own classes: it would replace it unseen (or, a subclass's over an inherited field, be
    replaced by it)."""
    mine = defined_by(cls, installed=(Declared,))
    names = {spec.name for spec in specs} | {spec.guid_field for spec in specs if isinstance(spec, Relation)}
    if shadowed := sorted(names & mine.keys()):
        raise InvalidValueError(
            f"{cls.__name__}: {', '.join(f'{mine[name].__name__}.{name}' for name in shadowed)} is also the "
            f"name of a field of {cls.__name__}, and one would hide the other; rename one of them")
