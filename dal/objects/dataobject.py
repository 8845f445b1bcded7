"""``DataObject``: the base of every hybrid, and what its objects do."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from dal.backends.base import Entry
from dal.cache.journal import RESOLVE_WINDOW, Outcome, Uncertain
from dal.cache.seen import Seen
from dal.config import Context, current
from dal.exceptions import (
    BackendError,
    CommitOutcomeUnknownError,
    InvalidRelationError,
    InvalidValueError,
    MissingMandatoryFieldsError,
    ObjectNotFoundError,
    RaceConditionError,
    UniqueConstraintError,
)
from dal.model.meta import HybridMeta, HybridMetaclass
from dal.objects import dynamics
from dal.objects.relations import check_abandon, onetoone_refusal, plan_unlink
from dal.objects.schema import ensure_recorded, onetoone_ready
from dal.objects.transaction import Document, Plan, changed_fields, decode, encode, merge, plan_write
from dal.query.results import changed_versions
from dal.structures import Dynamic, Relation, check_guid
from dal.values import same

Self = TypeVar("Self", bound="DataObject")

#: commits tried before a save gives up with RaceConditionError
MAX_ATTEMPTS = 12
#: back-off before retry n is uniform in [0, min(BACKOFF_CAP, BACKOFF_BASE * 2**n)] seconds
BACKOFF_BASE = 0.002
BACKOFF_CAP = 0.1


class DataObject(metaclass=HybridMetaclass):
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

    def __init__(self, guid: str | None = None, data: Mapping[str, Any] | None = None) -> None:
        state = self.__dict__
        if guid is not None:
            if data is not None:
                raise InvalidValueError(
                    f"{type(self).__name__}(guid, data=...): pass a guid to load an object or data "
                    "for a new one, not both")
            check_guid(guid, f"{type(self).__name__}(guid)")
            context = current()
            entry = context.load_document(self._meta.name, guid)
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
        if data is not None:
            for name, value in data.items():
                if name not in self._meta.assignable:
                    raise InvalidValueError(
                        f"{type(self).__name__} has no property or relation {name!r}; "
                        f"known: {', '.join(sorted(self._meta.fields()))}")
                setattr(self, name, value)

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
        known, documents = known or {}, documents or {}
        missing = [guid for guid in guids if guid not in known]
        entries = {guid: known[guid] for guid in guids if guid in known}
        context = current()
        if missing:
            entries.update(context.load_documents(cls._meta.name, missing))
        seen = context.seen
        loaded = {guid: cls._from_entry(guid, entry, documents.get(guid), seen=seen)
                  for guid, entry in entries.items()}
        siblings = list(loaded.values())
        for obj in siblings:
            obj.__dict__["_siblings"] = siblings
        return loaded

    def _attach(self, guid: str, entry: Entry, document: Document | None = None, *,
                seen: Seen | None = None) -> None:
        meta = self._meta
        try:
            data = decode(entry.value) if document is None else document
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
        # this process must never return an older revision of it from now on
        (seen or current().seen).note(meta.name, guid, entry.revision)

    def _meta_defaults(self) -> dict[str, Any]:
        data = {name: prop.make_default() for name, prop in self._meta.properties.items()}
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
            raise AttributeError(
                f"{type(self).__name__} has no property, relation or dynamic named {name!r}; "
                f"declared: {', '.join(sorted(self._declared))}")

    def _related(self, relation: Relation) -> DataObject | None:
        if relation.name in self._objects:
            return self._objects[relation.name]
        guid = self._data[relation.guid_field]
        if guid is None:
            return None
        target = _target(relation)
        siblings: list[DataObject] | None = self.__dict__.get("_siblings")
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
        target = _target(relation)
        if type(value) is not target:  # a subclass is another hybrid, stored under another name
            raise InvalidValueError(
                f"{relation.qualified} holds a {target.__name__}, not {value!r}")
        self._data[relation.guid_field] = value.guid
        self._objects[relation.name] = value

    def _relate_guid(self, relation: Relation, value: Any) -> None:
        if value is not None:
            check_guid(value, f"{relation.qualified}_guid (or None)")
        self._data[relation.guid_field] = value
        self._objects.pop(relation.name, None)

    def _dynamic(self, spec: Dynamic) -> Any:
        return dynamics.read(current(), self, spec)

    # --- persistence --------------------------------------------------------------------

    def save(self, datastore_wins: bool | None = False) -> None:
        """Store this object in one atomic transaction, merging concurrent changes to other fields.

        The same field changed here and in the store since this object was loaded: with
        ``datastore_wins=False`` ours wins, ``True`` theirs, ``None`` raises ConcurrencyError.
        Still conflicting after the retries: RaceConditionError. On any error this object
        is left exactly as it was, except that an earlier save whose outcome was unknown, found
        applied first, is now part of it. CommitOutcomeUnknownError: call save() again.
        """
        self._check_mandatory()
        context = current()
        if "_uncertain" in self.__dict__:
            self._settle(context)
        ensure_recorded(context, self._meta)
        meta = self._meta
        ours = self._document()
        original = decode(self._raw) if self._raw is not None else {}
        stored: Document | None = original if self._raw is not None else None
        revision = self._revision
        new = {**self._extra, **ours}
        if stored is not None and not changed_fields(stored, new) and stored.keys() == new.keys():
            return  # nothing to write
        label = f"{type(self).__name__} {self.guid}"
        ready = onetoone_ready(context, meta)
        for attempt in range(MAX_ATTEMPTS):
            try:
                plan = plan_write(context.keys, meta, self.guid, stored, revision, new, ready)
            except (TypeError, ValueError) as exc:
                raise InvalidValueError(
                    f"{label} holds a value JSON cannot store ({exc}); a list or "
                    "dict changed in place bypasses validation: assign JSON values only") from exc
            # a brand-new guid has no cached document (a load before the save cached nothing), but
            # a dynamic may have been read before the first save, and cached query results may change
            invalidate = [*self._cache_keys(context, document=stored is not None),
                          *changed_versions(context.keys, meta, self.guid, stored, new)]
            try:
                result = context.commit(plan.checks, plan.ops, invalidate)
            except CommitOutcomeUnknownError as exc:
                # learnt by the next save(), delete() or refresh(), which never apply it twice
                self.__dict__["_uncertain"] = (exc.commit, new, invalidate, ours)
                raise
            if result.ok:
                # a revision not known (0) becomes -1: the next commit fails its check and merges
                self._saved(context, new, result.revision or -1, merged=attempt > 0)
                return
            failed = [plan.reasons[index] for index in result.failed]
            if all(reason.kind != "document" for reason in failed):
                self._raise_constraint(plan, result.failed)
            # the stored document moved on: whatever the cache holds of this object is old
            context.invalidate(*self._cache_keys(context))
            doc_key = context.keys.doc(meta.name, self.guid)
            entry = result.current.get(doc_key)
            if entry is None:
                if self._revision:
                    raise ObjectNotFoundError(
                        f"{label} was deleted by another writer while this "
                        "object was being saved; create a new object to store it again")
                stored, revision = None, 0
            else:
                stored, revision = decode(entry.value), entry.revision
                # compared with what this object was loaded as: fields its stored document lacked
                # (written before they were declared) read as their defaults, so they are not ours
                new = merge(meta.with_defaults(original), ours, meta.with_defaults(stored), datastore_wins,
                            label)
            _back_off(attempt)
        raise RaceConditionError(
            f"{label} kept changing concurrently; gave up after "
            f"{MAX_ATTEMPTS} attempts. Retry the operation, or reduce contention on this object")

    def _settle(self, context: Context) -> None:
        """Learn whether this object's last save, whose outcome was unknown, was applied.

        Applied: the object becomes what that save stored (another writer's fields merged in
        included), and the values changed here since are kept on top, to be saved next. Not
        applied: nothing to do. Still unknown: raise again, rather than risk applying it twice;
        past RESOLVE_WINDOW, say that it will never be known, and let the object be used again.
        """
        uncertain, document, invalidate, ours_then = self.__dict__["_uncertain"]
        journal = context.journal
        if journal is None or not isinstance(uncertain, Uncertain):
            del self.__dict__["_uncertain"]
            return
        outcome, revision = journal.resolve(uncertain)
        label = f"{type(self).__name__} {self.guid}"
        if outcome is Outcome.UNKNOWN:
            if time.time() - uncertain.stamp <= RESOLVE_WINDOW:
                raise CommitOutcomeUnknownError(
                    f"the outcome of the last save of {label} is still unknown: the store has not "
                    f"answered {context.persistent_url} in {journal._budget():g} s; try again once it "
                    "answers (this object keeps the change and never applies it twice)", uncertain)
            del self.__dict__["_uncertain"]
            journal.give_up(uncertain)
            raise CommitOutcomeUnknownError(
                f"the outcome of the last save of {label} could not be learnt within "
                f"{RESOLVE_WINDOW:g} s, and no longer can be: it may or may not have been applied. "
                f"Load the object again ({type(self).__name__}(guid)) and look before saving", uncertain)
        del self.__dict__["_uncertain"]
        if outcome is Outcome.APPLIED:
            journal.settled(uncertain, invalidate, revision)
            now, values = self._document(), dict(self._data)
            since = [name for name, value in now.items() if not same(value, ours_then.get(name))]
            # -1 when the revision is not known: the next commit then fails its check and merges
            self._saved(context, document, revision or -1, merged=True)
            for name in since:
                self._data[name] = values[name]

    def _saved(self, context: Context, document: Document, revision: int, *, merged: bool) -> None:
        meta = self._meta
        raw = encode(document)
        data = {name: document.get(name) for name in meta.fields()}
        for name, validator in meta.converters:
            data[name] = validator.from_json(data[name])
        changed = changed_fields(self._document(), data) if merged else []
        state = self.__dict__
        state["_data"] = data
        state["_raw"] = raw
        state["_revision"] = revision
        state["_extra"] = {k: v for k, v in document.items() if k not in meta.field_set}
        for name in changed:  # merged in from the store: our cached related object is stale
            self._objects.pop(name.removesuffix("_guid"), None)
        if revision > 0:
            context.seen.note(meta.name, self.guid, revision)

    def delete(self, abandon: Sequence[str] | None = None) -> None:
        """Remove this object in one transaction: document, unique keys, index entries, links.

        Refused with LinkedObjectError while other objects point at it, unless ``abandon``
        names their reverse relations (or is ``['_all']``): then their links are cleared in
        the same transaction. Deleting an object that is already gone is harmless.
        """
        context = current()
        if "_uncertain" in self.__dict__:
            self._settle(context)
        meta = self._meta
        covered = check_abandon(meta, abandon or ())
        doc_key = context.keys.doc(meta.name, self.guid)
        stored: Document | None = decode(self._raw) if self._raw is not None else None
        revision = self._revision
        if stored is None:
            entry = context.persistent.get(doc_key)
            stored, revision = (None, 0) if entry is None else (decode(entry.value), entry.revision)
        for attempt in range(MAX_ATTEMPTS):
            if stored is None:
                # already gone (by another writer, or by our own commit whose answer was lost and
                # that was then resent): drop whatever a cache may still hold of it
                context.invalidate(*self._cache_keys(context))
                break
            plan = plan_write(context.keys, meta, self.guid, stored, revision, None)
            unlink = plan_unlink(context, meta, self.guid, covered)
            invalidate = [*self._cache_keys(context), *unlink.cache_keys,
                          *changed_versions(context.keys, meta, self.guid, stored, None)]
            result = context.commit(plan.checks + unlink.checks, plan.ops + unlink.ops, invalidate)
            if result.ok:
                if result.revision > 0:  # a cached copy older than the delete is stale here
                    context.seen.note(meta.name, self.guid, result.revision)
                break
            if 0 in result.failed:  # the document itself changed or vanished
                context.invalidate(*self._cache_keys(context))
                entry = result.current.get(doc_key)
                stored, revision = (None, 0) if entry is None else (decode(entry.value), entry.revision)
            _back_off(attempt)
        else:
            raise RaceConditionError(
                f"{type(self).__name__} {self.guid} kept changing while being deleted; retry")
        state = self.__dict__
        state["_raw"] = None
        state["_revision"] = 0

    def refresh(self) -> None:
        """Reload the persisted data; related objects that were loaded are reloaded, or dropped
        when the relation changed or they are gone. Nothing that was never loaded gets loaded."""
        self._refresh(set())

    def _refresh(self, seen: set[int]) -> None:
        seen.add(id(self))
        context = current()
        if "_uncertain" in self.__dict__:
            self._settle(context)  # a commit still on its way must not land after this reload
        entry = context.load_document(self._meta.name, self.guid)
        if entry is None:
            raise ObjectNotFoundError(f"{type(self).__name__} {self.guid} is no longer stored")
        loaded = self._objects
        self._attach(self.guid, entry)
        for name, obj in loaded.items():
            if obj is None or obj.guid != self._data[self._meta.relations[name].guid_field]:
                continue
            if id(obj) not in seen:
                try:
                    obj._refresh(seen)
                except ObjectNotFoundError:
                    continue
            self._objects[name] = obj

    def updated_on_datastore(self) -> bool:
        """Return whether the stored object changed since this instance loaded or saved it."""
        context = current()
        entry = context.persistent.get(context.keys.doc(self._meta.name, self.guid))
        return (entry.revision if entry is not None else 0) != self._revision

    def invalidate_dynamics(self, names: Sequence[str] | None = None) -> None:
        """Drop the cached values of some (or all) dynamics of this object."""
        meta = self._meta
        chosen = list(meta.dynamics) if names is None else list(names)
        unknown = [name for name in chosen if name not in meta.dynamics]
        if unknown:
            raise InvalidValueError(
                f"{type(self).__name__} has no dynamic {', '.join(unknown)}; "
                f"known: {', '.join(meta.dynamics) or 'none'}")
        context = current()
        context.dynamics.invalidate(
            *(context.keys.cached_dynamic(meta.name, self.guid, name) for name in chosen))

    def _cache_keys(self, context: Context, *, document: bool = True) -> list[str]:
        meta, keys = self._meta, context.keys
        cached = [keys.cached_doc(meta.name, self.guid)] if document else []
        cached += [keys.cached_dynamic(meta.name, self.guid, name) for name in meta.dynamics]
        return cached

    def _check_mandatory(self) -> None:
        meta = self._meta
        missing = [name for name, prop in meta.properties.items()
                   if prop.mandatory and self._data[name] is None]
        missing += [name for name, rel in meta.relations.items()
                    if rel.mandatory and self._data[rel.guid_field] is None]
        unresolved = [rel.qualified for rel in meta.relations.values()
                      if rel.target is None and self._data[rel.guid_field] is not None]
        if unresolved:
            raise InvalidRelationError(
                f"{', '.join(unresolved)} points at a hybrid that has not been declared, so the link "
                "cannot be checked; import the module that declares it before saving")
        if missing:
            raise MissingMandatoryFieldsError(
                f"{type(self).__name__} cannot be saved without {', '.join(missing)}; set "
                f"{'it' if len(missing) == 1 else 'them'} first", tuple(missing))

    def _raise_constraint(self, plan: Plan, failed: Sequence[int]) -> None:
        reason = plan.reasons[failed[0]]
        name = type(self).__name__
        if reason.kind == "onetoone":
            raise onetoone_refusal(current(), self._meta.relations[reason.field], self.guid, reason.value)
        if reason.kind == "unique":
            raise UniqueConstraintError(
                f"{name}.{reason.field} must be unique: another {name} already has {reason.value!r}; "
                "choose another value")
        relation = self._meta.relations[reason.field]
        target = relation.target.__name__ if relation.target is not None else "object"
        raise ObjectNotFoundError(
            f"{name}.{reason.field} points at {target} {reason.value!r}, which is not stored; "
            f"save the {target} first or link an existing one")

    def _document(self) -> Document:
        """Return the JSON form of every stored field."""
        data = dict(self._data)
        for name, validator in self._meta.converters:
            data[name] = validator.to_json(data[name])
        return data

    # --- views --------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Return ``{property: value}`` for the plain properties."""
        return {name: self._data[name] for name in self._meta.properties}

    def serialize(self, depth: int = 0) -> dict[str, Any]:
        """Return a JSON-ready dict: guid, properties, relations (nested when ``depth > 0``), dynamics."""
        result: dict[str, Any] = {"guid": self.guid}
        result.update((name, value) for name, value in self._document().items()
                      if name in self._meta.properties)
        for name, relation in self._meta.relations.items():
            if depth > 0:
                related = self._related(relation)
                result[name] = None if related is None else related.serialize(depth - 1)
            else:
                result[relation.guid_field] = self._data[relation.guid_field]
        for name, spec in self._meta.dynamics.items():
            result[name] = spec.validator.to_json(getattr(self, name))
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataObject):
            return NotImplemented
        return self._meta.name == other._meta.name and self.guid == other.guid

    def __hash__(self) -> int:
        return hash((self._meta.name, self.guid))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.guid}>"


def _back_off(attempt: int) -> None:
    """Sleep a jittered, exponentially growing pause before retry ``attempt + 1``."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)))


def _target(relation: Relation) -> type[DataObject]:
    if relation.target is None:
        raise InvalidRelationError(
            f"{relation.qualified} points at {relation.foreign_type!r}, which has not been declared; "
            "import the module that declares it")
    return relation.target
