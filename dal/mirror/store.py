"""Storing what a refresh learnt: the remote's answer with its parsed properties, or the failure.

Each is one transaction on the object's stored document, checked against its revision and
retried over a concurrent write (a refresh writes only its own fields, so it never needs to
merge: it re-reads and writes them again). The remote wins for the fields a refresh writes;
every other field, relations included, is written back as stored. A refresh that finds that
another refresh stored an answer since it read the object (before asking the remote) writes
nothing: the stored answer may have been asked after its own, and no clock tells, since
``cached_at`` comes from each machine's own clock (see :attr:`Stored.superseded`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from dal.backends.base import Entry
from dal.cache.versions import changed_versions
from dal.config import Context
from dal.exceptions import InvalidValueError, MirrorError, RaceConditionError, UniqueConstraintError
from dal.objects.dataobject import DataObject
from dal.objects.mirrored import parsed
from dal.objects.schema import ensure_recorded, onetoone_ready
from dal.objects.spelling import unchanged
from dal.objects.transaction import Document, Plan, decode, edited_since, encode, plan_write, retry_from
from dal.objects.views import unique_owners
from dal.objects.writes import MAX_ATTEMPTS
from dal.values import canonical, same

#: the fields of a mirrored object only refreshes write
WRITTEN_BY_REFRESH = frozenset({"info", "cached_at", "error"})


@dataclass(frozen=True)
class Stored:
    """What a refresh left in the store: the new entry (``None``: the object is gone) and what it wrote."""

    entry: Entry | None
    #: the answer differed from the stored ``info`` (its digest did)
    changed: bool = False
    #: the fields this refresh wrote: ``info``, ``cached_at``, ``error`` and the parsed properties
    fields: frozenset[str] = WRITTEN_BY_REFRESH
    #: nothing written: another refresh stored its answer (``cached_at`` or ``info`` moved) since this
    #: one read the object before asking the remote; ``fields`` are the ones that refresh wrote
    superseded: bool = False


def digest(info: Any) -> str:
    """Return the digest of the canonical JSON of a remote answer (key order and spacing do not count)."""
    return hashlib.sha256(canonical(info).encode()).hexdigest()


def parsed_names(cls: type[DataObject], info: Any) -> frozenset[str]:
    """Return the properties a refresh that stored ``info`` wrote (for an instance adopting its result)."""
    if not isinstance(info, dict):
        return WRITTEN_BY_REFRESH
    try:
        return WRITTEN_BY_REFRESH | frozenset(parsed(cls, info))
    except Exception:  # it parsed when it was stored; a parser changed since is no reason to fail
        return WRITTEN_BY_REFRESH | frozenset(cls._meta.properties)


def storable(cls: type[DataObject], info: Any, loader: str) -> dict[str, Any]:
    """Return ``info``, the answer ``loader`` returned, as stored, validated as an assignment of ``info``
    would be: in its JSON form, in which a tuple is a list and an int key a str, as the store writes it.

    Raise MirrorError when it is no dict, InvalidValueError when ``info`` cannot hold it (lists and
    dicts nested more than MAX_DEPTH deep, a NaN, a lone surrogate, a value JSON cannot hold): stored,
    it would make the object fail ``to_model()``, ``dal check`` and the load of its dump.
    """
    if not isinstance(info, dict):
        raise MirrorError(f"{cls.__name__}.{loader} returned {type(info).__name__}, "
                          "not a JSON object (a dict)")
    check = cls._meta.properties["info"].validator
    try:
        return cast(dict[str, Any], check(info))  # the common case: JSON values already
    except InvalidValueError as exc:
        refused = exc
    try:
        as_stored = json.loads(canonical(info))
    except (TypeError, ValueError, RecursionError):  # no JSON form (a set, an int key beside a str key)
        as_stored = None
    if as_stored is not None:
        try:
            return cast(dict[str, Any], check(as_stored))
        except InvalidValueError as exc:
            refused = exc
    raise InvalidValueError(f"{cls.__name__}.{loader} returned an answer that cannot be stored, as "
                            f"{refused}; have {loader} return one that can") from None


def store_answer(context: Context, obj: DataObject, info: Any, fetched_at: float,
                 entry: Entry | None, loader: str) -> Stored:
    """Store the remote's answer about ``obj`` (which ``loader`` returned at ``fetched_at``), read from
    the store at ``entry`` before the remote was asked.

    Unchanged (same digest): ``cached_at`` advances, an earlier ``error`` is cleared, and the
    parsed properties whose stored value differs are written again (one changed locally, or one a
    newer parser returns). Changed: ``info``, the parsed properties, ``cached_at`` and
    ``error=None`` in one transaction. An answer ``info`` cannot hold raises (:func:`storable`).
    """
    cls = type(obj)
    answer, info = info, storable(cls, info, loader)  # the parser reads the answer as the loader returned it
    new_digest = digest(info)
    properties: dict[str, Any] | None = None

    def updates(stored: Document) -> dict[str, Any]:
        nonlocal properties
        known = stored.get("info")
        if properties is None:  # the parser runs once; a retried write reuses what it returned
            properties = parsed(cls, answer)
        if isinstance(known, dict) and digest(known) == new_digest:
            # the same answer: only the parsed properties that drifted from it are written again
            as_stored = cls._meta.with_defaults(stored)
            drifted = {name: value for name, value in properties.items()
                       if not same(as_stored.get(name), value)}
            return {**drifted, "cached_at": fetched_at, "error": None}
        return {**properties, "info": info, "cached_at": fetched_at, "error": None}

    return _write(context, obj, entry, updates)


def store_failure(context: Context, obj: DataObject, error: str, entry: Entry | None) -> Stored:
    """Record a failed refresh, which read ``entry`` before asking the remote: ``error`` only; ``info``,
    the properties and ``cached_at`` stay. Nothing is written over an answer stored since ``entry``."""
    return _write(context, obj, entry, lambda stored: {"error": error})


def _superseded(stored: Document, read: Document) -> bool:
    """Tell whether ``stored`` holds an answer another refresh stored since this one ``read`` the object.

    Only refreshes write ``cached_at`` and ``info``; no clock is compared (each machine writes its own
    time in ``cached_at``), so an answer stored meanwhile wins even when its ``cached_at`` reads earlier.
    """
    return any(not same(stored.get(name), read.get(name)) for name in ("cached_at", "info"))


def _write(context: Context, obj: DataObject, entry: Entry | None, updates: Any) -> Stored:
    meta = obj._meta
    doc_key = context.keys.doc(meta.name, obj.guid)
    ensure_recorded(context, meta)
    read = decode(entry.value) if entry is not None else {}  # as read before the remote was asked
    for attempt in range(MAX_ATTEMPTS):
        if entry is None:
            return Stored(None)  # deleted meanwhile: a refresh never brings an object back
        stored = decode(entry.value)
        if _superseded(stored, read):
            # another refresh, which may have asked after this one, stored its answer first: it stays
            return Stored(entry, False, parsed_names(type(obj), stored.get("info")), superseded=True)
        changes: dict[str, Any] = updates(stored)
        new = {**meta.with_defaults(stored), **changes}
        if stored.keys() == new.keys() and all(same(stored[name], new[name]) for name in changes):
            return Stored(entry, False, frozenset(changes))  # nothing to write (the same error again)
        plan = plan_write(context.keys, meta, obj.guid, stored, entry.revision, new,
                          onetoone_ready(context, meta), unique_owners(context, meta, stored, new))
        invalidate = [*obj._cache_keys(context), *changed_versions(context.keys, meta, obj.guid, stored, new)]
        result = context.commit(plan.checks, plan.ops, invalidate)
        if result.ok:
            if result.revision > 0:
                context.seen.note(meta.name, obj.guid, result.revision)
            # a revision not known (0) becomes -1: a save from this instance then fails its check and merges
            return Stored(Entry(encode(new), result.revision or -1), "info" in changes, frozenset(changes))
        if all(plan.reasons[index].kind != "document" for index in result.failed):
            _refuse(obj, plan, result.failed)  # a parsed unique property another object holds
        if 0 not in result.failed:  # only a unique key it gives up changed owner: plan again, as a save
            continue
        context.invalidate(*obj._cache_keys(context))
        entry = retry_from(context, doc_key, result, attempt)
    raise RaceConditionError(f"{type(obj).__name__} {obj.guid} kept changing while its refresh was stored; "
                             f"gave up after {MAX_ATTEMPTS} attempts")


def _refuse(obj: DataObject, plan: Plan, failed: Sequence[int]) -> None:
    """Raise the error of a refresh whose commit failed a check other than the document's revision."""
    reason = plan.reasons[failed[0]]
    if reason.kind != "unique":
        obj._raise_constraint(plan, failed)
    name = type(obj).__name__
    raise UniqueConstraintError(
        f"{name}.{reason.field} must be unique: the remote gives {reason.value!r}, which another {name} "
        f"still holds; this clears when that {name} is refreshed with its new value (if the remote swapped "
        f"their values, neither refresh can: save this one with a value no {name} holds, refresh the "
        "other, then this one)")


def adopt(obj: DataObject, entry: Entry, written: frozenset[str]) -> None:
    """Make ``obj`` the stored document ``entry``, keeping the changes made to it and not saved yet.

    Unsaved changes are told as a save tells them, as read (a field the loaded document spells otherwise
    than this version writes it is no change here). Those to fields the refresh wrote are dropped (the
    remote wins there); related
    objects already loaded stay when the relation still points at them (a refresh never changes one).
    A field changed here whose value in ``entry`` is not the one the instance was loaded with
    (another writer saved it meanwhile) keeps that loaded value as its merge base, and the revision
    becomes unknown (-1): ``save()`` then fails its check, reads the store, and merges the field by
    ``datastore_wins`` exactly as for an instance that was never refreshed.
    """
    meta = obj._meta
    loaded_as = decode(obj._raw) if obj._raw is not None else None
    before = {} if loaded_as is None else meta.with_defaults(loaded_as)
    ours = obj._document()
    # changed here as this version reads the loaded document, as a save tells (a value stored spelt
    # otherwise is as loaded, a newer model's nested field kept): a respelling is no change to keep
    edited = [] if loaded_as is None else edited_since(meta, loaded_as, ours, obj._extra)
    local = {name: obj._data[name] for name in edited
             if name in ours and name in before and name not in written}
    loaded = dict(obj._objects)
    obj._attach(obj.guid, entry)
    document = decode(entry.value)
    now, typed = meta.with_defaults(document), meta.typed
    # changed here and in the store since the load: the base stays the loaded value, so a save sees both
    base = {name: before[name] for name in local
            if not unchanged(typed.get(name), now.get(name), before[name], theirs=True)}
    obj._data.update(local)
    if base:
        obj.__dict__["_raw"] = encode({**document, **base})
        obj.__dict__["_revision"] = -1
    for name, related in loaded.items():
        if related is None or related.guid == obj._data[meta.relations[name].guid_field]:
            obj._objects[name] = related
