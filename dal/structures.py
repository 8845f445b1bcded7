"""The declarative specs a hybrid lists: :class:`Property`, :class:`Relation`, :class:`Dynamic`.

Each spec binds itself to its owner class once, at class creation (``bind``), and then acts
as the descriptor for its attribute. Validation is compiled once per property.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from pydantic import ConfigDict, TypeAdapter, ValidationError

from dal.exceptions import InvalidValueError

if TYPE_CHECKING:
    from dal.dataobject import DataObject

T = TypeVar("T")

#: types whose JSON form is the Python value itself: no conversion on load or store
_NATIVE = (str, int, float, bool, list, dict)
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)  # JSON holds no NaN or Infinity


class Validator:
    """Validate values of one declared type; compiled once, used at every assignment."""

    def __init__(self, owner: str, declared: object) -> None:
        self.owner = owner
        self.enum: tuple[object, ...] | None = None
        self.native = False
        if isinstance(declared, (list, tuple)):
            if not declared:
                raise InvalidValueError(f"{owner}: an enum needs at least one allowed value")
            self.enum = tuple(declared)
            self.adapter: TypeAdapter[Any] | None = None
            self.native = all(isinstance(item, (str, int, float, bool)) for item in declared)
            self.label = "one of " + ", ".join(repr(item) for item in declared)
            return
        try:
            strict = declared in _NATIVE
            form = cast(Any, declared)
            self.adapter = TypeAdapter(form, config=_STRICT) if strict else TypeAdapter(form)
        except Exception as exc:  # pydantic raises several kinds for types it cannot handle
            raise InvalidValueError(
                f"{owner}: type {declared!r} cannot be validated; use str, int, float, bool, list, dict, "
                "a list of allowed values, or a JSON-serializable type pydantic understands") from exc
        self.native = declared in _NATIVE
        self.label = getattr(declared, "__name__", repr(declared))

    def __call__(self, value: object) -> Any:
        """Return ``value`` validated (``None`` always passes); raise InvalidValueError."""
        if value is None:
            return None
        if self.enum is not None:
            # 1 == True in Python; an enum of strings must not admit a bool or an int by accident
            if any(type(value) is type(item) and value == item for item in self.enum):
                return value
            raise InvalidValueError(f"{self.owner} must be {self.label}, not {value!r}")
        assert self.adapter is not None
        try:
            result = self.adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            problem = exc.errors()[0].get("msg", "invalid value")
            raise InvalidValueError(
                f"{self.owner} must be {self.label}, not {value!r} ({type(value).__name__}): {problem}"
            ) from None
        if self.native and isinstance(result, (list, dict)):
            problem = _not_json(result)
            if problem:
                raise InvalidValueError(
                    f"{self.owner} must hold JSON values only (str keys; str, int, float, bool, None, "
                    f"list, dict values), so it reads back exactly as stored: {problem}")
        return result

    def to_json(self, value: Any) -> Any:
        """Return the JSON-ready form of a validated value."""
        if value is None or self.native or self.adapter is None:
            return value
        return self.adapter.dump_python(value, mode="json")

    def from_json(self, value: Any) -> Any:
        """Return the Python value for a stored JSON value."""
        if value is None or self.native or self.adapter is None:
            return value
        return self.adapter.validate_python(value)


class Spec:
    """What every spec shares: its name, its owner once bound, and its documentation."""

    name: str
    doc: str | None
    owner: type[DataObject] | None = None

    def bind(self, owner: type[DataObject]) -> None:
        """Attach this spec to the hybrid that declared (or inherited) it."""
        self.owner = owner

    def copy_for(self, owner: type[DataObject]) -> Spec:
        """Return a copy bound to ``owner`` (a subclass inheriting this spec)."""
        clone = copy.copy(self)
        validator = getattr(self, "validator", None)
        if validator is not None:  # each owner names itself in its error messages
            clone.validator = copy.copy(validator)  # type: ignore[attr-defined]
        clone.bind(owner)
        return clone

    @property
    def qualified(self) -> str:
        owner = self.owner.__name__ if self.owner is not None else "?"
        return f"{owner}.{self.name}"


class Property(Spec, Generic[T]):
    """A persistent field, stored in the durable store and validated on assignment."""

    def __init__(self, name: str, property_type: Any, mandatory: bool = True, default: Any = None,
                 unique: bool = False, indexed: bool = False, doc: str | None = None) -> None:
        _check_name(name, "Property")
        self.name = name
        self.property_type = property_type
        self.mandatory = mandatory
        self.unique = unique
        self.indexed = indexed
        self.doc = doc
        self.validator = Validator(f"Property {name!r}", property_type)
        self.default = self.validator(default)
        # immutable defaults can be shared; a list or dict is deep-copied for every object
        self._copy_default = not isinstance(self.default, (str, int, float, bool, type(None)))

    def bind(self, owner: type[DataObject]) -> None:
        super().bind(owner)
        self.validator.owner = f"{owner.__name__}.{self.name}"

    def make_default(self) -> Any:
        """Return this property's default, copied so no two objects share it."""
        return copy.deepcopy(self.default) if self._copy_default else self.default

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Property[T]: ...
    @overload
    def __get__(self, obj: DataObject, objtype: type | None = None) -> T: ...
    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Property[T] | T:
        if obj is None:
            return self
        return cast(T, obj._data[self.name])

    def __set__(self, obj: DataObject, value: Any) -> None:
        obj._data[self.name] = self.validator(value)

    def __repr__(self) -> str:
        return f"Property({self.name!r}, {self.validator.label})"


class Relation(Spec):
    """A many-to-one (or one-to-one) link to another hybrid, stored as ``<name>_guid``."""

    def __init__(self, name: str, foreign_type: type[DataObject] | str | None, foreign_key: str,
                 mandatory: bool = True, onetoone: bool = False, doc: str | None = None) -> None:
        _check_name(name, "Relation")
        _check_name(foreign_key, "Relation foreign_key")
        if foreign_type is not None and not isinstance(foreign_type, (str, type)):
            raise InvalidValueError(
                f"Relation {name!r}: foreign_type must be a hybrid class, its name as a string, "
                f"or None for the class itself, not {foreign_type!r}")
        self.name = name
        self.foreign_type = foreign_type
        self.foreign_key = foreign_key
        self.mandatory = mandatory
        self.onetoone = onetoone
        self.doc = doc
        self.target: type[DataObject] | None = None

    @property
    def guid_field(self) -> str:
        return f"{self.name}_guid"

    def resolve(self, target: type[DataObject]) -> None:
        """Record the hybrid this relation points at, once known."""
        self.target = target

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._related(self)

    def __set__(self, obj: DataObject, value: Any) -> None:
        obj._relate(self, value)

    def __repr__(self) -> str:
        target = self.foreign_type if isinstance(self.foreign_type, str) else getattr(
            self.foreign_type, "__name__", "self")
        return f"Relation({self.name!r} -> {target}.{self.foreign_key})"


class RelationGuid:
    """The ``<relation>_guid`` attribute: the linked guid, readable without a load."""

    def __init__(self, relation: Relation) -> None:
        self.relation = relation

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._data[self.relation.guid_field]

    def __set__(self, obj: DataObject, value: Any) -> None:
        obj._relate_guid(self.relation, value)


class Dynamic(Spec):
    """A computed field: ``_<name>()`` loads it, the volatile store caches it for ``timeout`` seconds."""

    def __init__(self, name: str, return_type: Any, timeout: float, locked: bool = False,
                 doc: str | None = None, *, lock_timeout: float = 10.0) -> None:
        _check_name(name, "Dynamic")
        for label, seconds, least in (("timeout", timeout, 0), ("lock_timeout", lock_timeout, 1e-9)):
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < least:
                raise InvalidValueError(
                    f"Dynamic {name!r}: {label} must be a number of seconds "
                    f"{'>= 0 (0 = never cached)' if least == 0 else '> 0'}, not {seconds!r}")
        #: how long a lock holder may compute, and a waiter wait, before others compute themselves
        self.lock_timeout = lock_timeout
        self.name = name
        self.return_type = return_type
        self.timeout = timeout
        self.locked = locked
        self.doc = doc
        self.validator = Validator(f"Dynamic {name!r}", return_type)
        self.loader_takes_spec = False

    def bind(self, owner: type[DataObject]) -> None:
        super().bind(owner)
        self.validator.owner = f"{owner.__name__}.{self.name}"
        loader = getattr(owner, f"_{self.name}", None)
        if not callable(loader):
            raise InvalidValueError(
                f"{owner.__name__} declares Dynamic {self.name!r} but has no loader; "
                f"define `def _{self.name}(self): ...` on the class")
        self.loader_takes_spec = _accepts_keyword(loader, "dynamic")

    def compute(self, obj: DataObject) -> Any:
        """Call the loader and return its validated result."""
        loader: Callable[..., Any] = getattr(obj, f"_{self.name}")
        value = loader(dynamic=self) if self.loader_takes_spec else loader()
        return self.validator(value)

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._dynamic(self)

    def __set__(self, obj: DataObject, value: Any) -> None:
        raise AttributeError(f"{self.qualified} is a dynamic property and cannot be assigned")

    def __repr__(self) -> str:
        return f"Dynamic({self.name!r}, timeout={self.timeout}, locked={self.locked})"


def _not_json(value: object, path: str = "value") -> str:
    """Return what keeps ``value`` from a JSON round trip that gives it back unchanged, or ''."""
    if value is None or isinstance(value, (str, bool, int)):
        return ""
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    if isinstance(value, list):
        return next((p for i, item in enumerate(value) if (p := _not_json(item, f"{path}[{i}]"))), "")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has the key {key!r}; JSON object keys are strings"
            problem = _not_json(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return ""
    return f"{path} holds a {type(value).__name__} ({value!r})"


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise InvalidValueError(
            f"{what} name {name!r} must be a public Python identifier (letters, digits, underscores, "
            "not starting with an underscore)")


def _accepts_keyword(func: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)

