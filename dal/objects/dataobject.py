"""``DataObject``: the base of every hybrid, and what its objects do.

Loading, attribute access, refresh and views are here; saving and deleting are
:class:`dal.objects.writes.Writes`, which ``DataObject`` inherits. A mirrored hybrid's objects
refresh from their remote through :mod:`dal.objects.mirrored` (``_before_read``, ``stale``,
``refresh_info``).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from dal.backends.base import Entry
from dal.cache.seen import Seen
from dal.config import current
from dal.exceptions import (
    BackendError,
    InvalidRelationError,
    InvalidValueError,
    MirrorError,
    ObjectNotFoundError,
)
from dal.model.declared import internal_field
from dal.model.expressions import Where, where
from dal.model.meta import HybridMeta, HybridMetaclass, TypedMetaclass
from dal.model.registry import hybrids
from dal.objects import decoding, dynamics, lookups, mirrored, models, origin, relations
from dal.objects.transaction import Document
from dal.objects.writes import Writes
from dal.structures import Relation, check_guid, is_guid

if TYPE_CHECKING:
    from dataclasses import InitVar

    from pydantic import BaseModel

Self = TypeVar("Self", bound="DataObject")


class DataObject(Writes, metaclass=HybridMetaclass):
    """A hybrid object: persistent properties, lazy relations and cached dynamics.

    ``Cls()`` makes a new object, ``Cls(guid)`` loads one, ``Cls(data={...})`` makes a new
    object pre-filled. Declare specs in the name-mangled ``__properties``, ``__relations``
    and ``__dynamics`` lists of a subclass.
    """

    _meta: ClassVar[HybridMeta]
    _declared: ClassVar[frozenset[str]]
    guid: str
    _data: dict[str, Any]
    _raw: bytes | None
    _revision: int
    _objects: dict[str, DataObject | None]
    _extra: dict[str, Any]

    def __init__(self, guid: str | None = None, data: Mapping[str, Any] | None = None, **fields: Any) -> None:
        state = self.__dict__
        if guid is not None:
            if data is not None or fields:
                raise InvalidValueError(
                    f"{type(self).__name__}(guid, ...): pass a guid to load an object, or data (or "
                    "keywords) for a new one, not both")
            if not is_guid(guid):  # check_guid, its message built only when it raises
                check_guid(guid, f"{type(self).__name__}(guid)")
            context = current()
            entry = context.load_document(type(self)._meta.name, guid)  # the class's: says if no hybrid
            if entry is None:
                raise ObjectNotFoundError(f"no {type(self).__name__} with guid {guid!r} is stored")
            self._attach(guid, entry, seen=context.seen)
            return
        state["guid"] = str(uuid.uuid4())
        state["_data"] = self._meta_defaults()
        state["_raw"] = None
        state["_revision"] = 0
        state["_objects"] = {}
        state["_extra"] = {}
        if data is not None and not isinstance(data, Mapping):
            raise InvalidValueError(f"{type(self).__name__}(data=...) takes a mapping of names to values, "
                                    f"not a {type(data).__name__}; pass data=dict(...) or keywords")
        if data is not None or fields:
            self._fill(fields if data is None else {**data, **fields})

    def _fill(self, values: Mapping[str, Any]) -> None:
        """Assign the fields of a new object (``data=`` or keywords), each validated as an assignment.

        Every name is checked before any is assigned, and a refused value leaves nothing assigned:
        the constructor raises, so no half-built object escapes.
        """
        relations.check_filled(type(self).__name__, self._meta, values)
        for name, value in values.items():
            setattr(self, name, value)

    # --- lookups ------------------------------------------------------------------------

    @classmethod
    def get(cls: type[Self], guid: str) -> Self:
        """Load the object of this guid (``Cls(guid)``, typed, no None); ObjectNotFoundError when absent."""
        if guid is None:  # Cls(None) makes a new object; get() loads one
            check_guid(guid, f"{cls.__name__}.get(guid)")
        return cls(guid)

    @classmethod
    def get_by(cls: type[Self], **unique: Any) -> Self:
        """Load the object whose unique property holds a value: ``Cls.get_by(name='x')``; one key read."""
        for _ in range(2):  # once more if it was renamed between the key read and the load
            obj = cls(lookups.unique_guid(cls, cls._meta, unique))
            if lookups.still_holds(obj, cls._meta, unique):
                return obj
        raise ObjectNotFoundError(f"no {cls.__name__} with {unique} is stored (it keeps changing)")

    @classmethod
    def where(cls: type[Self], *conditions: Where | bool) -> lookups.Query[Self]:
        """Return the ``DataList`` of the objects matching every condition: ``Cls.where(Cls.x == 1, ...)``."""
        return lookups.query(cls, where(*conditions))  # type: ignore[no-any-return]

    @classmethod
    def model(cls) -> type[BaseModel]:
        """Return the pydantic model of this hybrid: guid, properties, ``<relation>_guid`` (built once)."""
        return models.model_of(cls, cls._meta)

    def to_model(self) -> BaseModel:
        """Return this object as an instance of ``Cls.model()``."""
        return models.to_model(self)

    @classmethod
    def from_model(cls: type[Self], model: BaseModel) -> Self:
        """Return the object a model describes: the stored one, values assigned, or a new one."""
        return models.from_model(cls, cls._meta, model)  # type: ignore[no-any-return]

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def _from_entry(cls: type[Self], guid: str, entry: Entry, document: Document | None = None, *,
                    seen: Seen | None = None) -> Self:
        """Build an object from its stored document without another round trip.

        ``document`` is ``entry``'s value already decoded (a query did), which the object takes over.
        """
        obj = cls.__new__(cls)
        obj._attach(guid, entry, document, seen=seen)
        return obj

    @classmethod
    def _load_many(cls: type[Self], guids: list[str], known: Mapping[str, Entry] | None = None,
                   documents: Mapping[str, Document] | None = None) -> dict[str, Self]:
        """Load many objects in batched round trips; absent guids are left out.

        ``known`` entries (and their decoded ``documents``), already read by a query, are
        used instead of reading them again. Objects loaded together know each other, so the
        first access to a relation of one loads that relation's targets for all of them at
        once (no N+1).
        """
        entries = {guid: known[guid] for guid in guids if guid in known} if known else {}
        missing = [guid for guid in guids if guid not in entries] if entries else guids
        context = current()
        if missing:
            entries.update(context.load_documents(cls._meta.name, missing))
        seen, document, loaded = context.seen, (documents or {}).get, {}
        siblings: list[DataObject] = []  # filled as they are built: every object's, once all are
        for guid, entry in entries.items():  # _from_entry without a call per object (1,000 in a list)
            obj = loaded[guid] = cls.__new__(cls)
            obj._attach(guid, entry, document(guid), seen=seen)
            siblings.append(obj)
            obj.__dict__["_siblings"] = siblings
        return loaded

    def _attach(self, guid: str, entry: Entry, document: Document | None = None, *,
                seen: Seen | None = None) -> None:
        meta = self._meta
        try:
            data = decoding.document(entry.value) if document is None else document  # json.loads, faster
        except ValueError as exc:
            raise BackendError(
                f"the stored document of {type(self).__name__} {guid} is not a JSON object ({exc}); "
                "it was not written by dal, or the store is damaged: run `dal check`") from exc
        extra: dict[str, Any] = {}
        if data.keys() != meta.field_set:
            # written by another version of the model: fill defaults, keep unknown fields
            extra = {name: data.pop(name) for name in list(data) if name not in meta.field_set}
            for name in meta.field_set - data.keys():
                prop = meta.properties.get(name)
                data[name] = prop.make_default() if prop is not None else None
        for name, validator in meta.converters:
            try:
                data[name] = validator.from_json(data[name])
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise InvalidValueError(
                    f"the stored value of {type(self).__name__}.{name} of {guid} no longer fits its "
                    f"declared type: {data[name]!r}; migrate the stored data or widen the type") from exc
        state = self.__dict__
        state["guid"] = guid
        state["_data"] = data
        state["_raw"] = entry.value
        state["_revision"] = entry.revision
        state["_objects"] = {}
        state["_extra"] = extra
        state.pop("_deleted", None)  # stored again since its delete() (a refresh() finds it)
        # this process must never return an older revision of it from now on (``is None``, not ``or``:
        # a Seen's truth is its length); its scope names the store and namespace the object came from
        seen = current().seen if seen is None else seen
        seen.note(meta.name, guid, entry.revision)
        state["_loaded_from"] = seen.scope

    def _meta_defaults(self) -> dict[str, Any]:
        data = {name: prop.make_default() for name, prop in type(self)._meta.properties.items()}
        for relation in self._meta.relations.values():
            data[relation.guid_field] = None
        return data

    # --- attributes ---------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._declared or name.startswith("_"):
            object.__setattr__(self, name, value)
        elif name == "guid":
            raise AttributeError(f"{type(self).__name__}.guid is read-only")
        else:
            raise AttributeError(f"{type(self).__name__} has no property, relation or dynamic named "
                                 f"{name!r}; declared: {', '.join(sorted(self._declared))}")

    def __delattr__(self, name: str) -> None:
        if name in self._declared or name == "guid":  # a spec has no __delete__: Python said only that
            raise AttributeError(
                f"cannot delete {type(self).__name__}.{name}: the guid and declared attributes stay on every "
                "object (assign None to clear an optional field; invalidate_dynamics() forgets a dynamic)")
        object.__delattr__(self, name)

    def __copy__(self: Self) -> Self:
        """An object of its own (as deepcopy and pickle give) sharing only the related objects loaded:
        not ``obj``'s fields, relations, unknown fields, nor its list (whose batch loads fill ``obj``'s)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update({key: value for key, value in self.__dict__.items() if key != "_siblings"},
                              _data=copy.deepcopy(self._data), _objects=dict(self._objects),  # deep: lists,
                              _extra=copy.deepcopy(self._extra))  # dicts, models changed in place
        return clone

    def _related(self, relation: Relation) -> DataObject | None:
        if relation.name in self._objects:
            return self._objects[relation.name]
        guid = self._data[relation.guid_field]
        if guid is None:
            return None
        origin.check_read(self, relation, current())  # loaded under another configure(): not from this one
        target = _target(relation)
        siblings: list[DataObject] = origin.siblings(self)  # not those of another store: theirs are refused
        if siblings:
            wanted = [s._data[relation.guid_field] for s in siblings if relation.name not in s._objects]
            loaded = target._load_many(sorted({guid for guid in wanted if guid is not None}))
            for sibling in siblings:
                sibling_guid = sibling._data[relation.guid_field]
                if relation.name not in sibling._objects and sibling_guid in loaded:
                    sibling._objects[relation.name] = loaded[sibling_guid]
            if relation.name in self._objects:
                return self._objects[relation.name]
        obj = target(guid)
        self._objects[relation.name] = obj
        return obj

    def _relate(self, relation: Relation, value: Any) -> None:
        if value is None:
            self._data[relation.guid_field] = None
            self._objects[relation.name] = None
            return
        relations.check_linkable(relation, _target(relation), value)
        self._data[relation.guid_field] = value.guid
        self._objects[relation.name] = value

    def _relate_guid(self, relation: Relation, value: Any) -> None:
        if value is not None:
            check_guid(value, f"{relation.qualified}_guid (or None)")
        self._data[relation.guid_field] = value
        self._objects.pop(relation.name, None)

    # --- mirrored hybrids ----------------------------------------------------------------

    def _before_read(self) -> None:
        """Called by the descriptors of a mirrored hybrid's fields: refresh a stale object first.

        Once per instance (``_mirror_checked``, set by the mirror); an object not stored yet has
        nothing to refresh into, so it is left alone until it is saved.
        """
        state = self.__dict__
        if "_mirror_checked" not in state and state.get("_raw") is not None:
            mirrored.before_read(self)

    @property
    def stale(self) -> bool:
        """Whether this mirrored object is due a refresh: ``ignore_cache`` set, never refreshed, or
        refreshed ``timeout`` seconds ago or more. Reading it never refreshes."""
        mirror = self._meta.mirror
        if mirror is None:
            raise AttributeError(f"{type(self).__name__} is not mirrored (it declares no __mirror), "
                                 "so never stale")
        data = self._data
        return mirror.stale(data["cached_at"], data["ignore_cache"], mirrored.clock.now())

    def refresh_info(self) -> None:
        """Refresh this mirrored object from its remote now, stale or not, and store the answer.

        Raises MirrorError (the remote's error as its ``__cause__``) when the remote fails or its
        answer cannot be stored; the failure is recorded in ``error`` as well. ConfigurationError, nothing
        asked, when it was loaded under another store or namespace than the current ``configure()``'s.
        """
        if self._meta.mirror is None:
            raise MirrorError(f"{type(self).__name__} is not mirrored: it declares no __mirror")
        mirrored.refresh_now(self)

    #: ``Dynamic.__get__`` reads through this: the read itself, no call in between
    _dynamic = dynamics.read

    # --- persistence --------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the persisted data and forget the related objects loaded through this one.

        They are forgotten, not reloaded: the caller may hold one of them with changes not saved
        yet, which a reload would throw away. The next read of the relation loads it afresh."""
        context = current()
        if "_uncertain" in self.__dict__:
            self._settle(context)  # a commit still on its way must not land after this reload
        entry = context.load_document(self._meta.name, self.guid)
        if entry is None:
            raise ObjectNotFoundError(f"{type(self).__name__} {self.guid} is no longer stored")
        self._attach(self.guid, entry)  # drops self._objects with the old data

    def updated_on_datastore(self) -> bool:
        """Return whether the stored object changed since this instance loaded or saved it."""
        context = current()
        entry = context.persistent.get(context.keys.doc(self._meta.name, self.guid))
        return (entry.revision if entry is not None else 0) != self._revision

    def invalidate_dynamics(self, names: str | Sequence[str] | None = None) -> None:
        """Drop the cached values of some (or all) dynamics of this object: one name, or a list of them."""
        meta = self._meta
        # a str is one name, not its characters; bytes or a non-iterable one too (refused), not its ints
        chosen: list[Any] = list(meta.dynamics) if names is None else ([names] if isinstance(
            names, (str, bytes, bytearray)) or not isinstance(names, Iterable) else list(names))
        unknown = [name for name in chosen if not isinstance(name, str) or name not in meta.dynamics]
        if unknown:
            raise InvalidValueError(
                f"{type(self).__name__} has no dynamic {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(meta.dynamics) or 'none'}")
        context = current()
        origin.check_write(f"{type(self).__name__} {self.guid} (whose invalidate_dynamics() would drop the "
                           "current store's values, not its own)", self, context)
        context.dynamics.invalidate(
            *(context.keys.cached_dynamic(meta.name, self.guid, name) for name in chosen))

    # --- views --------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Return ``{property: value}`` for the plain properties (lists, dicts and models copied)."""
        self._before_read_if_mirrored()
        return models.exported(self)

    def serialize(self, depth: int = 0) -> dict[str, Any]:
        """Return a JSON-ready dict: guid, properties, relations (nested when ``depth > 0``, at most 100
        deep; one deleted before this instance first read it is None), dynamics; lists and dicts copied."""
        return models.serialized(self, depth)

    def _before_read_if_mirrored(self) -> None:
        if self._meta.mirror is not None:
            self._before_read()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataObject):
            return NotImplemented
        return self._meta.name == other._meta.name and self.guid == other.guid

    def __hash__(self) -> int:
        return hash((self._meta.name, self.guid))

    def __repr__(self) -> str:
        # never raises: made by __new__ alone (pickling, a debugger), an object has no guid yet
        return f"<{type(self).__name__} {self.__dict__.get('guid', '(no guid)')}>"


class TypedObject(DataObject, metaclass=TypedMetaclass, abstract=True):
    """A ``DataObject`` that type checkers see as a dataclass (``typing.dataclass_transform``).

    Its hybrids' annotated fields (``name: str = Property()``) are the keywords of their constructor
    for mypy and pyright: ``Cls(nmae='x')`` is a type error. At run time it is ``DataObject`` exactly.
    """

    if TYPE_CHECKING:  # the type checker's constructor: Cls(guid), Cls(data=...), Cls(field=...)
        guid: str = internal_field(default=None, kw_only=False)
        data: InitVar[Mapping[str, Any] | None] = internal_field(default=None)


def _target(relation: Relation) -> type[DataObject]:
    if relation.target is None:  # not declared yet, or an abstract base: the registry says which
        raise InvalidRelationError(hybrids.undeclared(relation))
    return relation.target
