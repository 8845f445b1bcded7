"""Annotated declarations: ``name: str = Property(unique=True)`` beside the ``__properties`` lists.

``Property``, ``Relation`` and ``Dynamic`` exported by :mod:`dal` take both forms. Called with a
name (the list form), they return the spec of :mod:`dal.structures` itself. Called with keywords
only, in a class body under an annotation, they return a :class:`Declared`: a pending spec the
metaclass completes (:func:`annotated_specs`) with the attribute's name and the annotated type,
into exactly the spec the list form builds, so ``_meta`` cannot tell the two apart.

For type checkers the keyword form returns ``Any`` (as ``dataclasses.field`` and pydantic's
``Field`` do), so ``name: str = Property()`` type-checks and the attribute reads as ``str``.
"""

from __future__ import annotations

import ast
import builtins
import sys
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from dal import structures
from dal.exceptions import ConfigurationError, InvalidValueError

T = TypeVar("T")

#: the options each kind takes in the keyword form, besides the name and the type the annotation gives
OPTIONS: dict[str, frozenset[str]] = {
    "properties": frozenset({"mandatory", "default", "unique", "indexed", "doc"}),
    "relations": frozenset({"foreign_key", "mandatory", "onetoone", "doc"}),  # the target: annotated
    "dynamics": frozenset({"timeout", "locked", "doc", "lock_timeout"}),
}
KINDS: dict[str, type[structures.Spec]] = {
    "properties": structures.Property, "relations": structures.Relation, "dynamics": structures.Dynamic}


class Declared:
    """A spec declared by annotation, waiting for its class: ``kind`` and the keyword options given."""

    def __init__(self, kind: str, options: Mapping[str, Any]) -> None:
        if kind == "relations" and "foreign_type" in options:  # a second target, which could contradict
            target = options["foreign_type"]
            named = target if isinstance(target, str) else getattr(target, "__name__", repr(target))
            raise ConfigurationError(
                f"Relation(foreign_type={named}) in a class body: the annotation names the target, "
                f"which type checkers read too, so foreign_type would repeat or contradict it; drop "
                f"foreign_type= and annotate the attribute `name: {named} | None = Relation(foreign_key="
                "...)` (a string for a hybrid declared later, the class itself for a self-relation)")
        unknown = sorted(set(options) - OPTIONS[kind])
        spec = KINDS[kind].__name__
        if unknown:
            raise InvalidValueError(
                f"{spec}(...) in a class body takes {', '.join(sorted(OPTIONS[kind]))}, not "
                f"{', '.join(unknown)}; the name is the attribute's and the type its annotation")
        if kind == "relations" and "foreign_key" not in options:
            raise InvalidValueError("Relation(...) in a class body needs foreign_key=, the name of the "
                                    "reverse accessor on the target")
        if kind == "dynamics" and "timeout" not in options:
            raise InvalidValueError("Dynamic(...) in a class body needs timeout=, in seconds")
        self.kind = kind
        self.options = dict(options)

    def build(self, name: str, annotation: Any, owner: str) -> structures.Spec:
        """Return the spec the list form would declare for attribute ``name`` annotated ``annotation``."""
        options = dict(self.options)
        annotation = self._unclassvar(annotation, f"{owner}.{name}")
        if self.kind == "properties":
            return structures.Property(name, property_type(annotation, f"{owner}.{name}"), **options)
        if self.kind == "dynamics":
            timeout = options.pop("timeout")
            return structures.Dynamic(name, property_type(annotation, f"{owner}.{name}"), timeout, **options)
        target = relation_target(annotation, owner)
        return structures.Relation(name, None if target == owner else target, options.pop("foreign_key"),
                                   **options)

    def _unclassvar(self, annotation: Any, where: str) -> Any:
        """Return ``X`` for a dynamic annotated ``ClassVar[X]``: for type checkers then no constructor
        keyword and not assignable on objects, as dal has it; refuse ``ClassVar`` on any other field."""
        if annotation is not typing.ClassVar and typing.get_origin(annotation) is not typing.ClassVar:
            return annotation
        spec = KINDS[self.kind].__name__
        if self.kind != "dynamics":
            raise ConfigurationError(
                f"{where}: a {spec} is no ClassVar: each object holds its own value, given to the "
                f"constructor and assigned; annotate it with its type alone (ClassVar is for a Dynamic)")
        arguments = typing.get_args(annotation)
        if len(arguments) != 1:  # a bare ClassVar
            raise ConfigurationError(f"{where}: annotate a dynamic ClassVar[TYPE], its return type inside")
        return arguments[0]

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"{KINDS[self.kind].__name__}({options})"


def property_type(annotation: Any, where: str) -> Any:
    """Return the ``property_type`` an annotation means: ``X | None`` is ``X``, a ``Literal`` its values."""
    if isinstance(annotation, str):
        raise ConfigurationError(f"{where}: the annotation {annotation!r} names nothing defined where the "
                                 "class is; a property's type must be importable when the class is created")
    annotation = unoptional(annotation)
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))  # an enum of allowed values, as the list form writes it
    return annotation


def relation_target(annotation: Any, owner: str) -> type[Any] | str:
    """Return the hybrid (or its class name, declared later) a relation's annotation names."""
    if isinstance(annotation, str):  # a forward reference: 'BackendType' or 'BackendType | None'
        text = annotation.strip().strip("'\"")
        parts = [part.strip() for part in text.split("|") if part.strip() != "None"]
        if text.startswith("Optional[") and text.endswith("]"):
            parts = [text[len("Optional["):-1]]
        if len(parts) != 1 or not parts[0].isidentifier():
            raise ConfigurationError(f"{owner}: a relation's annotation names one hybrid, not {annotation!r}")
        return parts[0]
    target = unoptional(annotation)
    if isinstance(target, typing.ForwardRef):  # Optional['Target']: the name of a hybrid declared later
        return relation_target(target.__forward_arg__, owner)
    if not isinstance(target, type):
        raise ConfigurationError(f"{owner}: a relation's annotation names a hybrid class, not {annotation!r}")
    return target


def unoptional(annotation: Any) -> Any:
    """Return ``X`` for ``Optional[X]`` (``X | None``), else ``annotation``."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in arguments:
        rest = [argument for argument in arguments if argument is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def annotated_specs(name: str, namespace: Mapping[str, Any]) -> dict[str, list[structures.Spec]]:
    """Return the specs a class body declares by annotation, by kind, in declaration order."""
    found: dict[str, list[structures.Spec]] = {kind: [] for kind in KINDS}
    annotations: Mapping[str, Any] = namespace.get("__annotations__", {})
    declared = {attribute: value for attribute, value in namespace.items() if isinstance(value, Declared)}
    missing = sorted(set(declared) - set(annotations))
    if missing:
        raise ConfigurationError(
            f"{name}: {', '.join(missing)} declared without an annotation; write `{missing[0]}: TYPE = "
            f"{declared[missing[0]]!r}` (the annotation gives the type)")
    for attribute, annotation in annotations.items():
        spec = declared.get(attribute)
        if spec is None:
            continue
        found[spec.kind].append(spec.build(attribute, _evaluate(annotation, namespace, f"{name}.{attribute}"),
                                           name))
    return found


def _evaluate(annotation: Any, namespace: Mapping[str, Any], where: str) -> Any:
    """Evaluate a string annotation (``from __future__ import annotations``) where the class is; a name not
    defined yet stays a string (a relation to a hybrid declared later)."""
    _refuse_hidden(annotation, namespace, where)
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(str(namespace.get("__module__")))
    scope = {**(vars(module) if module is not None else {}), **namespace}
    try:
        return eval(annotation, scope)  # the class's own annotation, as typing.get_type_hints evaluates it
    except NameError:
        return annotation
    except Exception as exc:  # '"Target" | None' is a str | None: type checkers take it, Python does not
        unquoted = annotation.replace('"', "").replace("'", "")
        raise ConfigurationError(
            f"{where}: the annotation {annotation!r} cannot be evaluated where the class is "
            f"({type(exc).__name__}: {exc}); quote all of it or nothing: `{where.rsplit('.', 1)[-1]}: "
            f'"{unquoted}"` (a hybrid declared later), or Optional["Target"]') from exc


_SPECS = (Declared, structures.Spec)


def _refuse_hidden(annotation: Any, namespace: Mapping[str, Any], where: str) -> None:
    """Refuse an annotation naming a field of the class body, as ``date: date = Property()`` does: there the
    name is the field's spec, not the type (which would be read as a spec, or fail to evaluate)."""
    names = _spec_names(annotation, namespace)
    if not names:
        return
    name = names[0]
    module = sys.modules.get(str(namespace.get("__module__")))
    hidden = getattr(module, name, getattr(builtins, name, None))
    home = getattr(hidden, "__module__", None)
    spelled = (f"`{home}.{getattr(hidden, '__qualname__', name)}` (after `import {home}`) or an alias "
               f"(`from {home} import {name} as {name[:1].upper()}{name[1:]}`)" if home
               else f"an alias (`from ... import {name} as {name[:1].upper()}{name[1:]}`)")
    text = f" {annotation!r}" if isinstance(annotation, str) else ""
    raise ConfigurationError(
        f"{where}: the annotation{text} names {name!r}, which in the class body is the field "
        f"{where.rsplit('.', 1)[0]}.{name} itself ({namespace[name]!r}), not a type: a field's name hides "
        f"whatever has that name inside the class body; spell the type another way, {spelled}")


def _spec_names(annotation: Any, namespace: Mapping[str, Any]) -> list[str]:
    """Return the names in ``annotation`` (its text, or what it evaluated to) bound to a spec in the class
    body; a string inside an evaluated annotation is a value (``Literal['date']``), not a name."""
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        try:
            tree = ast.parse(annotation.strip(), mode="eval")
        except SyntaxError:
            return []
        if isinstance(tree.body, ast.Constant) and isinstance(tree.body.value, str):
            return _spec_names(tree.body.value, namespace)  # quoted twice: "'date | None'"
        names = dict.fromkeys(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
        return [name for name in names if isinstance(namespace.get(name), _SPECS)]
    if isinstance(annotation, _SPECS):
        return [name for name, value in namespace.items() if value is annotation][:1]
    return [name for argument in typing.get_args(annotation) if not isinstance(argument, str)
            for name in _spec_names(argument, namespace)]


def add_annotated(name: str, namespace: Mapping[str, Any], declared: dict[str, list[Any]]) -> None:
    """Add the specs declared by annotation (``name: str = Property()``) after the listed ones."""
    listed = {getattr(spec, "name", None) for specs in declared.values() for spec in specs}
    for kind, specs in annotated_specs(name, namespace).items():
        twice = sorted(spec.name for spec in specs if spec.name in listed)
        if twice:
            raise ConfigurationError(f"{name}: {', '.join(twice)} declared both in a list and by annotation; "
                                     "keep one")
        declared[kind] += specs


class _Either(type):
    """Metaclass of the exported spec names: a name given is the list form, keywords only the annotated."""

    _kind: str

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args or "name" in kwargs:
            return KINDS[cls._kind](*args, **kwargs)
        return Declared(cls._kind, kwargs)

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, (KINDS[cls._kind], Declared))

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, KINDS[cls._kind])

    def __getitem__(cls, item: Any) -> Any:  # Property[int], as the spec class allows
        return KINDS[cls._kind][item]  # type: ignore[index]


if TYPE_CHECKING:  # the list form returns a spec, the keyword form Any (assignable to its annotation)
    class Property(structures.Property[T]):
        @overload
        def __new__(cls, name: str, property_type: Any, mandatory: bool = True, default: Any = None,
                    unique: bool = False, indexed: bool = False, doc: str | None = None) -> Property[Any]: ...
        @overload
        def __new__(cls, *, mandatory: bool = True, default: Any = None, unique: bool = False,
                    indexed: bool = False, doc: str | None = None) -> Any: ...
        def __new__(cls, *args: Any, **kwargs: Any) -> Any: ...

    class Relation(structures.Relation):
        @overload
        def __new__(cls, name: str, foreign_type: Any, foreign_key: str, mandatory: bool = True,
                    onetoone: bool = False, doc: str | None = None) -> Relation: ...
        @overload
        def __new__(cls, *, foreign_key: str, mandatory: bool = True, onetoone: bool = False,
                    doc: str | None = None) -> Any: ...
        def __new__(cls, *args: Any, **kwargs: Any) -> Any: ...

    class Dynamic(structures.Dynamic):
        @overload
        def __new__(cls, name: str, return_type: Any, timeout: float, locked: bool = False,
                    doc: str | None = None, *, lock_timeout: float = 10.0) -> Dynamic: ...
        @overload
        def __new__(cls, *, timeout: float, locked: bool = False, doc: str | None = None,
                    lock_timeout: float = 10.0) -> Any: ...
        def __new__(cls, *args: Any, **kwargs: Any) -> Any: ...
else:
    class Property(metaclass=_Either):
        """A persistent field: ``Property('x', str)`` in ``__properties``, or ``x: str = Property()``."""

        _kind = "properties"

    class Relation(metaclass=_Either):
        """A link: ``Relation('x', Target, 'xs')`` in a list, or ``x: Target | None = Relation(...)``."""

        _kind = "relations"

    class Dynamic(metaclass=_Either):
        """A computed field: ``Dynamic('x', int, 60)`` in a list, or ``x: int = Dynamic(timeout=60)``."""

        _kind = "dynamics"


def internal_field(*, default: Any = None, init: bool = True, kw_only: bool = True) -> Any:
    """For type checkers only: how ``DataObject`` declares its constructor's ``guid`` and its private state.

    Named in ``dataclass_transform(field_specifiers=...)`` of the hybrid metaclass; never called.
    """
    return default
