"""Schema records: the model the stored data was brought up to, and which index keys are complete.

Each hybrid has one record in the durable store, at ``m/schema/<hybrid>`` (JSON)::

    {"format": 1, "hybrid": "disk", "fingerprint": "<sha256>", "model": {...},
     "ready": {"indexed": ["code", ...], "unique": ["name", ...], "onetoone": ["pool", ...]}}

``model`` describes the declared properties and relations the documents were last brought
up to (by ``dal migrate``, or by the first save into an empty hybrid) but for the fields its
``lacking`` lists, ``fingerprint`` is a stable hash of it, and ``ready`` lists the indexed and
unique properties, and the one-to-one relations, whose keys exist for every document. The
query planner only uses keys listed as ready (``ready_indexes``); a property that became
indexed is queried by scanning until ``dal migrate`` builds its keys. A save trusts the absence
of a one-to-one key only when the relation is ready (``onetoone_ready``); until then it also
checks that no link points at the target, since documents stored before the keys existed have
none. (A record written before one-to-one keys existed lacks ``onetoone``: nothing of it is ready.)

Only two writers touch a record: ``ensure_recorded`` (called by every save, cheap) creates
it for a hybrid that has no documents yet (all keys are trivially complete) and removes
from ``ready`` what the running model does not maintain, and adds to ``lacking`` the fields the
record's model stores and the running one does not (:func:`ensure_recorded`); ``dal migrate``
marks fields ready after building their keys, and records a model with no ``lacking`` once every
document holds its fields. Nothing here ever marks a newly declared index ready on its own.

A process re-reads a record at most every ``READY_TTL`` seconds, so a change made by another
process (``dal migrate`` marking a field ready, an older model dropping one) is seen within
that window.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dal.backends.base import PrefixEmpty, Put, Revision
from dal.config import Context
from dal.exceptions import BackendError, RaceConditionError
from dal.model.meta import HybridMeta
from dal.model.registry import family
from dal.objects.schema_format import parse_record

#: seconds a process trusts the record it read; bounds how stale ``ready_indexes`` can be
READY_TTL = 2.0
FORMAT = 1
_ATTEMPTS = 12


@dataclass(frozen=True)
class SchemaRecord:
    """A decoded schema record and the revision it was read at (0: not stored)."""

    hybrid: str
    model: dict[str, Any]
    fingerprint: str
    indexed: frozenset[str]
    unique: frozenset[str]
    revision: int = 0
    #: one-to-one relations whose keys exist for every document
    onetoone: frozenset[str] = frozenset()

    def ready_for(self, meta: HybridMeta) -> frozenset[str]:
        """Return the properties of ``meta`` whose every declared kind of key is listed as ready."""
        return frozenset(
            prop.name for prop in meta.properties.values()
            if (prop.indexed or prop.unique)
            and (not prop.indexed or prop.name in self.indexed)
            and (not prop.unique or prop.name in self.unique))

    def onetoone_ready_for(self, meta: HybridMeta) -> frozenset[str]:
        """Return the one-to-one relations of ``meta`` whose keys this record lists as complete."""
        return frozenset(onetoone_relations(meta)) & self.onetoone

    def unmaintained(self, meta: HybridMeta) -> tuple[frozenset[str], frozenset[str]]:
        """Return the (indexed, unique) fields listed ready that ``meta`` does not keep up to date."""
        return (self.indexed - {p.name for p in meta.indexed}, self.unique - {p.name for p in meta.unique})

    def unmaintained_onetoone(self, meta: HybridMeta) -> frozenset[str]:
        """Return the relations listed ready whose one-to-one keys ``meta`` does not keep up to date."""
        return self.onetoone - set(onetoone_relations(meta))

    def replace(self, *, model: dict[str, Any] | None = None, indexed: Iterable[str] | None = None,
                unique: Iterable[str] | None = None, onetoone: Iterable[str] | None = None) -> SchemaRecord:
        model = self.model if model is None else model
        return SchemaRecord(self.hybrid, model, model_fingerprint(model),
                            self.indexed if indexed is None else frozenset(indexed),
                            self.unique if unique is None else frozenset(unique), self.revision,
                            self.onetoone if onetoone is None else frozenset(onetoone))

    def at(self, revision: int) -> SchemaRecord:
        """Return this record as stored at ``revision``."""
        return dataclasses.replace(self, revision=revision)

    def encode(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "hybrid": self.hybrid, "fingerprint": self.fingerprint, "model": self.model,
            "ready": {"indexed": sorted(self.indexed), "unique": sorted(self.unique),
                      "onetoone": sorted(self.onetoone)},
        }, sort_keys=True, separators=(",", ":")).encode()


def describe(meta: HybridMeta) -> dict[str, Any]:
    """Return the stored-data view of a hybrid's model: what its fingerprint covers."""
    properties = {
        name: {"type": _type_label(prop.property_type), "default": prop.validator.to_json(prop.default),
               "mandatory": prop.mandatory, "indexed": prop.indexed, "unique": prop.unique}
        for name, prop in sorted(meta.properties.items())}
    relations = {
        name: {"target": relation.target._meta.name if relation.target is not None
               else str(relation.foreign_type),
               "mandatory": relation.mandatory, "onetoone": relation.onetoone}
        for name, relation in sorted(meta.relations.items())}
    return {"properties": properties, "relations": relations}


def model_fingerprint(model: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(model, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stored_fields(model: dict[str, Any], *, marked: bool = False) -> frozenset[str]:
    """Return the document fields a described model stores (properties and ``<relation>_guid``) but,
    unless ``marked``, those it marks ``lacking``: without them, the fields every document holds."""
    fields = frozenset(model.get("properties", {})) | {f"{name}_guid" for name in model.get("relations", {})}
    return fields if marked else fields - frozenset(model.get("lacking", ()))


def onetoone_relations(meta: HybridMeta) -> tuple[str, ...]:
    """Return the names of ``meta``'s one-to-one relations (each keeps one key per target)."""
    return tuple(name for name, relation in meta.relations.items() if relation.onetoone)


def complete_record(meta: HybridMeta) -> SchemaRecord:
    """Return the record of a hybrid whose documents all match ``meta`` and whose keys are all built."""
    model = describe(meta)
    return SchemaRecord(meta.name, model, model_fingerprint(model), frozenset(p.name for p in meta.indexed),
                        frozenset(p.name for p in meta.unique), 0, frozenset(onetoone_relations(meta)))


def decode_record(hybrid: str, raw: bytes, revision: int) -> SchemaRecord:
    """Decode a stored record; an unreadable one (:func:`~dal.objects.schema_format.record_fault` says
    why) counts as a record with nothing ready."""
    try:
        model, fingerprint, indexed, unique, onetoone = parse_record(raw)
    except (ValueError, TypeError):
        # written by something else: trust nothing in it; `dal migrate` rewrites it
        return SchemaRecord(hybrid, {}, "", frozenset(), frozenset(), revision)
    return SchemaRecord(hybrid, model, fingerprint, indexed, unique, revision, onetoone)


def read_record(context: Context, hybrid: str) -> SchemaRecord | None:
    """Return the stored schema record of ``hybrid``, or ``None``."""
    entry = context.persistent.get(context.keys.schema(hybrid))
    return None if entry is None else decode_record(hybrid, entry.value, entry.revision)


# --- the per-process view the planner and saves read --------------------------------------


@dataclass
class _State:
    """What one process knows about one hybrid's record in one context."""

    record: SchemaRecord | None
    read_at: float
    ensured_at: float = float("-inf")
    #: the record was absent and documents existed: only `dal migrate` can record this hybrid now
    creation_refused: bool = False
    #: the fields the record's model stores (:func:`recorded_fields`), worked out once
    fields: frozenset[str] | None = None
    #: those of them the running model does not declare, at their defaults (:func:`undeclared_defaults`)
    undeclared: Mapping[str, Any] | None = None
    #: the record was read after the hybrid's schema version read as this token (:func:`as_of`)
    viewed_after: bytes | None = None


_lock = threading.Lock()
#: context -> hybrid -> state, held weakly: an entry goes with its context (or its hybrid's
#: ``_meta``), and can never be mistaken for that of a later object that took its place
_states: weakref.WeakKeyDictionary[Context, weakref.WeakKeyDictionary[HybridMeta, _State]] = (
    weakref.WeakKeyDictionary())


def _states_of(context: Context) -> weakref.WeakKeyDictionary[HybridMeta, _State]:
    states = _states.get(context)
    if states is None:
        states = _states[context] = weakref.WeakKeyDictionary()
    return states


def forget(context: Context) -> None:
    """Drop what this process cached about records (``dal migrate`` calls it after writing them)."""
    with _lock:
        _states.pop(context, None)


def as_of(context: Context, meta: HybridMeta, token: bytes) -> None:
    """Make this process's view of ``meta``'s record no older than the moment the hybrid's schema
    version (:meth:`dal.keys.Keys.schema_version`) was read as ``token``: re-read it unless the view
    was read after the version last read as ``token`` already. See :mod:`dal.query.results`.
    """
    with _lock:
        state = _states_of(context).get(meta)
    if state is not None and state.viewed_after == token:
        return
    state = _fresh_state(context, meta, 0.0)
    with _lock:
        state.viewed_after = token


def _fresh_state(context: Context, meta: HybridMeta, max_age: float | None = None) -> _State:
    """Return the cached state of ``meta``'s record, re-reading it when older than ``max_age``
    (READY_TTL unless given)."""
    now = time.monotonic()
    with _lock:
        state = _states_of(context).get(meta)
    if state is not None and now - state.read_at < (READY_TTL if max_age is None else max_age):
        return state
    record = read_record(context, meta.name)
    with _lock:
        previous = _states_of(context).get(meta)
        if previous is not None and previous.read_at > now:
            return previous  # another thread read it after this one began: its view is the newer
        state = _State(record, now)
        if previous is not None:  # a later read is as recent as the one it replaces
            state.viewed_after = previous.viewed_after
            if record is None:
                state.creation_refused = previous.creation_refused
        _states_of(context)[meta] = state
    return state


def ready_indexes(context: Context, meta: HybridMeta) -> frozenset[str]:
    """Names of the indexed/unique properties of `meta` whose index/unique keys are complete in the store.

    A property both indexed and unique is listed only when both kinds of key are complete. At
    most one durable read per (context, hybrid) every READY_TTL seconds; never writes.
    """
    state = _fresh_state(context, meta)
    return frozenset() if state.record is None else state.record.ready_for(meta)


def recorded_fields(context: Context, meta: HybridMeta) -> frozenset[str]:
    """Return the fields a stored document of ``meta`` lacks only if its create named their versions at
    the record's defaults (:func:`undeclared_defaults`), as far as its record tells: those of the model
    it describes, ``lacking`` ones included; none without a record. At most one durable read per
    (context, hybrid) every READY_TTL seconds; never writes.

    Asked on a cached query's hit path, which must not need the durable store: when the read fails,
    what was read last is kept, for another READY_TTL (none known yet: no field, the cautious answer).
    """
    with _lock:
        state = _states_of(context).get(meta)
    now = time.monotonic()
    if state is None or now - state.read_at >= READY_TTL:
        try:
            state = _fresh_state(context, meta)
        except BackendError:
            if state is None:
                return frozenset()
            state.read_at = now
    if state.fields is None:
        state.fields = frozenset() if state.record is None else stored_fields(state.record.model, marked=True)
    return state.fields


def undeclared_defaults(state: _State, meta: HybridMeta) -> Mapping[str, Any]:
    """Return the fields ``state``'s record lists that ``meta`` does not declare, each at the default
    that record's model reads from a document lacking it (JSON form): a newer model's, in a rolling
    deploy (see :mod:`dal.objects.views`). Worked out once per state.
    """
    if state.undeclared is None:
        model = {} if state.record is None else state.record.model
        declared = meta.stored_defaults
        found = {name: spec.get("default") for name, spec in model.get("properties", {}).items()}
        found.update((f"{name}_guid", None) for name in model.get("relations", {}))
        state.undeclared = MappingProxyType({name: default for name, default in found.items()
                                             if name not in declared})
    return state.undeclared


def current_state(context: Context, meta: HybridMeta, *, again: bool = False) -> _State:
    """Return this process's view of ``meta``'s record (read ``again`` now, whatever its age)."""
    return _fresh_state(context, meta, 0.0 if again else None)


def onetoone_ready(context: Context, meta: HybridMeta) -> frozenset[str]:
    """Names of the one-to-one relations of ``meta`` whose keys are complete for every object they span.

    A relation inherited by subclass hybrids is one constraint over all of them
    (:func:`dal.model.meta.family`), so it is ready only when every one of their records lists it.
    At most one durable read per (context, hybrid) every READY_TTL seconds; never writes.
    """
    ready = set()
    for name in onetoone_relations(meta):
        members = family(meta.relations[name])
        if all(member.owner is not None and member.name in _onetoone_listed(context, member.owner._meta)
               for member in members):
            ready.add(name)
    return frozenset(ready)


def _onetoone_listed(context: Context, meta: HybridMeta) -> frozenset[str]:
    state = _fresh_state(context, meta)
    return frozenset() if state.record is None else state.record.onetoone_ready_for(meta)


def ensure_recorded(context: Context, meta: HybridMeta) -> _State:
    """Called by DataObject.save before its commit; cheap after the first call per (context, hybrid).

    Creates the record of a hybrid that has no documents yet (every key is then complete),
    and removes from ``ready`` the fields this process's model does not index or keep unique,
    since its saves will not maintain their keys. Marks ``lacking`` the fields the record's model
    stores and this one does not (an older model's creates leave them out), so ``dal migrate`` fills
    them; their defaults stay, named by those creates (:func:`undeclared_defaults`), whose commit
    checks this record (:mod:`dal.objects.views`). Re-checks at most every READY_TTL seconds.
    Returns the view it ensured.
    """
    state = _fresh_state(context, meta)
    if state.ensured_at >= state.read_at:
        return state
    record = state.record
    for _ in range(_ATTEMPTS):
        if record is None:
            if state.creation_refused or not (meta.indexed or meta.unique or onetoone_relations(meta)):
                break  # nothing could be ready: a record would buy nothing and cost a commit
            record, refused = _create(context, meta)
            if refused:
                state.creation_refused = True
                break
            continue
        stale_indexed, stale_unique = record.unmaintained(meta)
        stale_onetoone = record.unmaintained_onetoone(meta)
        lacking = stored_fields(record.model) - meta.field_set
        if not (stale_indexed or stale_unique or stale_onetoone or lacking):
            break
        model = {**record.model, "lacking": sorted({*record.model.get("lacking", ()), *lacking})}
        record, written = _write(context, record.replace(model=model if lacking else None,
                                                         indexed=record.indexed - stale_indexed,
                                                         unique=record.unique - stale_unique,
                                                         onetoone=record.onetoone - stale_onetoone))
        if written:
            break
    else:
        raise RaceConditionError(
            f"the schema record of {meta.cls.__name__} kept changing while this save checked it; retry")
    with _lock:
        state.record = record
        state.ensured_at = state.read_at
        state.fields = state.undeclared = None  # worked out again from the record ensured
    return state


def _create(context: Context, meta: HybridMeta) -> tuple[SchemaRecord | None, bool]:
    """Record ``meta`` as complete if the hybrid has no documents; return (record now stored, refused)."""
    key = context.keys.schema(meta.name)
    record = complete_record(meta)
    result = context.commit([Revision(key, 0), PrefixEmpty(context.keys.docs(meta.name))],
                            [Put(key, record.encode())], [context.keys.schema_version(meta.name)])
    if result.ok:
        return record.at(result.revision), False
    entry = result.current.get(key)
    if entry is not None:  # another process recorded it first: check that one instead
        return decode_record(meta.name, entry.value, entry.revision), False
    return None, True  # documents exist without a record: their keys are unknown until `dal migrate`


def _write(context: Context, record: SchemaRecord) -> tuple[SchemaRecord | None, bool]:
    """Store ``record`` if the stored one is still at ``record.revision``; return (stored record, written)."""
    key = context.keys.schema(record.hybrid)
    # every record write deletes the schema version after it: see :func:`as_of`
    result = context.commit([Revision(key, record.revision)], [Put(key, record.encode())],
                            [context.keys.schema_version(record.hybrid)])
    if result.ok:
        return record.at(result.revision), True
    entry = result.current.get(key)
    return (None if entry is None else decode_record(record.hybrid, entry.value, entry.revision)), False


def write_record(context: Context, record: SchemaRecord) -> tuple[SchemaRecord | None, bool]:
    """Store ``record`` conditionally on its revision (0: absent); return (stored record, written)."""
    outcome = _write(context, record)
    forget(context)
    return outcome


def _type_label(declared: Any) -> Any:
    if isinstance(declared, (list, tuple)):
        return {"enum": [item if isinstance(item, (str, int, float, bool)) or item is None else repr(item)
                         for item in declared]}
    if isinstance(declared, type) and not getattr(declared, "__args__", None):
        module = declared.__module__
        return declared.__qualname__ if module == "builtins" else f"{module}.{declared.__qualname__}"
    return str(declared)
