"""The declarative specs a hybrid lists: :class:`Property`, :class:`Relation`, :class:`Dynamic`, and
the :class:`Mirror` a mirrored hybrid declares.

Each spec binds itself to its owner class once, at class creation (``bind``), and then acts
as the descriptor for its attribute. Validation is compiled once per property
(:class:`dal.validators.Validator`).

The specs name :class:`~dal.objects.dataobject.DataObject` in annotations only (the class they
describe, and whose objects they are descriptors of): one of the annotation-only upward
references docs/architecture.md lists.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar, cast, overload

from dal.exceptions import ConfigurationError, InvalidValueError, ReadOnlyFieldError
from dal.validators import Validator, shorten

if TYPE_CHECKING:
    from dal.objects.dataobject import DataObject


def _the_spec(spec: Any, owner: type | None) -> Any:
    return spec


#: what reading a field on its hybrid class gives (``Backend.status``): the spec itself until
#: :mod:`dal.model.expressions` installs the query builder's field expressions (the spec lives
#: here, below the model layer that knows hybrids); a descriptor's class access, so reading a
#: field on an object and every other class attribute cost nothing more
class_access: Callable[[Any, type | None], Any] = _the_spec

T = TypeVar("T")

#: a guid: a UUID in its canonical text form (lowercase hex, hyphenated), as dal makes them
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Spec:
    """What every spec shares: its name, its owner once bound, and its documentation."""

    name: str
    doc: str | None
    owner: type[DataObject] | None = None
    #: set by the metaclass on the fields of a mirrored hybrid: a read of the attribute first lets a
    #: stale object refresh (``DataObject._before_read``, once per instance)
    refreshes: bool = False

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
        _check_flags(f"Property {name!r}", mandatory=mandatory, unique=unique, indexed=indexed)
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
            return cast("Property[T]", class_access(self, objtype))
        if self.refreshes:
            obj._before_read()
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
        _check_flags(f"Relation {name!r}", mandatory=mandatory, onetoone=onetoone)
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
            return class_access(self, objtype)
        if self.refreshes:
            obj._before_read()
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
            return class_access(self, objtype)
        if self.relation.refreshes:
            obj._before_read()
        return obj._data[self.relation.guid_field]

    def __set__(self, obj: DataObject, value: Any) -> None:
        obj._relate_guid(self.relation, value)


class Dynamic(Spec):
    """A computed field: ``_<name>()`` loads it, the volatile store caches it for ``timeout`` seconds."""

    def __init__(self, name: str, return_type: Any, timeout: float, locked: bool = False,
                 doc: str | None = None, *, lock_timeout: float = 10.0) -> None:
        _check_name(name, "Dynamic")
        for label, seconds, least in (("timeout", timeout, 0), ("lock_timeout", lock_timeout, 1e-9)):
            # NaN compares False with everything; below 1e12 s (31,000 years), as Mirror's, so that
            # no wait or expiry derived from it overflows a float or a clock
            if (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
                    or not least <= seconds < 1e12):
                raise InvalidValueError(
                    f"Dynamic {name!r}: {label} must be a number of seconds "
                    f"{'>= 0 (0 = never cached)' if least == 0 else '> 0'} and below 1e12, not {seconds!r}")
        _check_flags(f"Dynamic {name!r}", locked=locked)
        if locked and timeout == 0:  # the lock is for waiting on another caller's cached value
            raise InvalidValueError(
                f"Dynamic {name!r}: locked=True with timeout=0 would share nothing: nothing is cached, so "
                "every read computes its own value and no caller could wait for another's; give it a "
                "timeout > 0 (seconds to cache the value) to compute it once, or drop locked=True")
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
        if problem := _uncallable(owner, f"_{self.name}", loader, self.loader_takes_spec):
            raise InvalidValueError(
                f"{owner.__name__}._{self.name} cannot be called as the loader of Dynamic {self.name!r} "
                f"({problem}); define `def _{self.name}(self): ...` (or "
                f"`def _{self.name}(self, dynamic): ...` to receive the spec)")

    def compute(self, obj: object) -> Any:
        """Call the loader of ``obj`` (an object of the owner) and return its validated result."""
        loader: Callable[..., Any] = getattr(obj, f"_{self.name}")
        value = loader(dynamic=self) if self.loader_takes_spec else loader()
        return self.validator(value)

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return class_access(self, objtype)
        return obj._dynamic(self)

    def __set__(self, obj: DataObject, value: Any) -> None:
        raise AttributeError(f"{self.qualified} is a dynamic property and cannot be assigned")

    def __repr__(self) -> str:
        return f"Dynamic({self.name!r}, timeout={self.timeout}, locked={self.locked})"
class Mirror:
    """How a mirrored hybrid follows a slow remote API: ``__mirror = Mirror(timeout=600, refresh_every=300)``.

    An object is stale when its ``ignore_cache`` is set, when it was never refreshed, or when
    ``timeout`` seconds passed since its ``cached_at``; the first read of a stale object refreshes
    it (see docs/mirror.md). ``refresh_every`` is the period of the bulk refresher (``dal refresh``),
    which must come round before objects time out, so it must be smaller than ``timeout``.
    ``lock_timeout`` bounds how long one refresh may hold the others of its object waiting (single
    flight across processes): past it, a waiting process calls the remote itself.
    """

    def __init__(self, timeout: float, *, refresh_every: float | None = None,
                 lock_timeout: float = 30.0) -> None:
        for label, seconds in (("timeout", timeout), ("lock_timeout", lock_timeout),
                               ("refresh_every", refresh_every)):
            if label == "refresh_every" and seconds is None:
                continue
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds < 1e12:
                raise ConfigurationError(
                    f"Mirror: {label} must be a positive number of seconds, not {seconds!r}")
        if refresh_every is not None and refresh_every >= timeout:
            raise ConfigurationError(
                f"Mirror(timeout={timeout!r}, refresh_every={refresh_every!r}): refresh_every must be "
                "smaller than timeout, or objects time out (and refresh lazily, one remote call each) "
                "before the bulk refresher comes round; lower refresh_every or raise timeout")
        self.timeout = float(timeout)
        self.refresh_every = None if refresh_every is None else float(refresh_every)
        self.lock_timeout = float(lock_timeout)

    def stale(self, cached_at: float | None, ignore_cache: bool | None, now: float) -> bool:
        """Tell whether an object refreshed at ``cached_at`` (``None``: never) is stale at ``now``."""
        return bool(ignore_cache) or cached_at is None or now - cached_at >= self.timeout

    @staticmethod
    def fields() -> list[Property[Any]]:
        """Return new specs of the fields every mirrored object stores besides its properties."""
        return [MirrorField("info", dict, mandatory=False,
                            doc="The last answer of the remote (a JSON object); written by refreshes only."),
                MirrorField("cached_at", float, mandatory=False,
                            doc="When the remote was last asked (seconds since the epoch); refreshes only."),
                MirrorField("error", str, mandatory=False,
                            doc="The last refresh error as text, or None; written by refreshes only."),
                Property("ignore_cache", bool, default=False,
                         doc="While True, the object is always stale: every new instance refreshes.")]

    def __repr__(self) -> str:
        return f"Mirror(timeout={self.timeout:g}, refresh_every={self.refresh_every})"


#: the fields a mirrored hybrid stores besides its own, and the names its objects answer to
MIRROR_FIELDS = ("info", "cached_at", "error", "ignore_cache")
MIRROR_NAMES = frozenset({*MIRROR_FIELDS, "stale", "refresh_info"})
#: mirror fields whose read never refreshes (``info`` does: it is the remote's data)
MIRROR_STATE = frozenset({"cached_at", "error", "ignore_cache"})


class MirrorField(Property[T]):
    """A field of a mirrored object that only refreshes write: reading works, assigning raises."""

    def __set__(self, obj: DataObject, value: Any) -> None:
        raise ReadOnlyFieldError(
            f"{self.qualified} is written only by refreshes from the remote; call refresh_info() to "
            "refresh it now, or set ignore_cache to make every new instance refresh")


def is_guid(value: object) -> TypeGuard[str]:
    """Tell whether ``value`` is a guid: a UUID in canonical text form, ``'0e5c1f6a-...-4a1b...'``.

    dal makes uuid4 guids; data from elsewhere may hold any UUID version, spelled the same
    way (lowercase hex, hyphenated, 36 characters), so one object has exactly one spelling
    and a guid can never carry a key separator, whitespace or anything else into a key.
    """
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


def check_guid(value: object, what: str) -> str:
    """Return ``value`` if it is a guid (see :func:`is_guid`); raise InvalidValueError naming ``what``."""
    if not is_guid(value):
        raise InvalidValueError(f"{what} must be a guid, not {shorten(value)}: {GUID_RULE}")
    return value


#: what a guid is, as error messages say it
GUID_RULE = ("a UUID in canonical form: 36 characters of lowercase hex digits and hyphens, like "
             "'1b4e28ba-2fa1-41d2-883f-0016d3cca427' (str(uuid.uuid4()); map other ids with "
             "str(uuid.uuid5(namespace, old_id)))")


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise InvalidValueError(
            f"{what} name {name!r} must be a public Python identifier (letters, digits, underscores, "
            "not starting with an underscore)")


def _check_flags(what: str, **flags: object) -> None:
    """Refuse a flag that is not a bool: ``mandatory='no'`` is truthy, and would be taken as True."""
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidValueError(f"{what}: {flag} must be True or False, not {shorten(value)} (any other "
                                    "value would be taken for its truth, 'no' or 'false' as True)")


def _accepts_keyword(func: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)



def _uncallable(owner: type, name: str, loader: Callable[..., Any], takes_spec: bool) -> str | None:
    """Return why ``loader`` cannot be called as a dynamic's loader on an object (``None``: it can, or its
    signature cannot be read): a descriptor (a function, an ``lru_cache``) is bound to the object, a static
    or class method is not, nor a plain callable; a wrapper is judged by its own signature, not the wrapped
    function's (``functools.wraps`` copies that one's name and arguments)."""
    found = inspect.getattr_static(owner, name)
    bound = hasattr(type(found), "__get__") and not isinstance(found, (staticmethod, classmethod))
    try:
        signature = inspect.signature(loader, follow_wrapped=False)
    except (TypeError, ValueError):
        return None  # a callable without a readable signature: called as it is
    try:
        signature.bind(*([None] if bound else []), **({"dynamic": None} if takes_spec else {}))
    except TypeError as exc:
        return str(exc)
    return None
