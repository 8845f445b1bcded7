"""One transaction builder for saves and deletes, the field-level merge on conflict, and where a retry starts.

A save or a delete is one atomic commit holding the document, its unique keys, its index
entries and the existence checks of the objects it links to. The keys to remove are
derived from the stored document the commit is checked against (its revision is part of
the commit), so index and unique keys can never drift from their documents. A unique key is
removed only if it names the object giving its value up: while a property's unique keys are not
built (``dal migrate`` found two objects sharing a value, or has not run since the property became
unique), the key of a value may be another holder's, and that one keeps it. So the keys of the
values a write gives up of such a property are read first (:func:`read_owners`), and the commit
checks them as read.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    Entry,
    Exists,
    Op,
    PersistentStore,
    PrefixEmpty,
    Put,
    Revision,
)
from dal.config import Context
from dal.exceptions import ConcurrencyError
from dal.keys import Keys
from dal.model.meta import HybridMeta
from dal.model.registry import family
from dal.model.trees import tree_kin
from dal.model.validation import dropped_paths
from dal.objects import decoding
from dal.objects.spelling import Document as Document  # the one definition; seventeen modules import it here
from dal.objects.spelling import edited_fields, read_stored, unchanged
from dal.structures import Relation
from dal.values import FROZEN, canonical, identical, same

#: back-off before retry n is uniform in [0, min(BACKOFF_CAP, BACKOFF_BASE * 2**n)] seconds
BACKOFF_BASE = 0.002
BACKOFF_CAP = 0.1
#: jitter drawn from a generator of dal's own: a library must not advance the application's
#: global random sequence, which a seeded program relies on; reseeded in a forked child, so
#: that processes forked from one parent do not jitter in step
_jitter = random.Random()
os.register_at_fork(after_in_child=_jitter.seed)


@dataclass(frozen=True)
class Reason:
    """Why a check is in a plan, so a failed commit can be explained."""

    #: "document" (the document's revision, or that of the key of a unique value it gives up: either
    #: failing means "read again and plan again", never a refusal), "unique", "target", "onetoone" or
    #: "kin" (a create's guid absent from another hybrid of its class tree, ``value``)
    kind: str
    field: str = ""
    value: Any = None


#: the reason of every plan's first check
_DOCUMENT = Reason("document")


@dataclass
class Plan:
    """The checks and ops of one commit, and the reason for each check."""

    checks: list[Check] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    #: the encoded document a save writes (``None`` for a delete), which the saved object keeps
    raw: bytes | None = None

    def check(self, check: Check, reason: Reason) -> None:
        self.checks.append(check)
        self.reasons.append(reason)


def plan_write(keys: Keys, meta: HybridMeta, guid: str, stored: Document | None, revision: int,
               new: Document | None, onetoone_ready: frozenset[str] = frozenset(),
               owners: Mapping[str, Entry | None] = MappingProxyType({})) -> Plan:
    """Plan the commit that turns ``stored`` (at ``revision``) into ``new`` (``None``: delete).

    ``onetoone_ready`` names the one-to-one relations whose keys are complete for the stored data
    (:func:`dal.objects.schema.onetoone_ready`); for the others a key's absence proves nothing, so the
    commit also checks that no link points at the new target. ``owners`` maps keys of unique values
    given up to what was read under them (``None``: absent; see :func:`read_owners`): each is deleted
    only if it names ``guid``, and checked as read. A key of a value given up that it does not hold is
    deleted unread, as a key of a property whose keys are built names its holder.
    """
    doc_key = keys.doc(meta.name, guid)
    raw = None if new is None else encode(new)
    plan = Plan([Revision(doc_key, revision)], [Delete(doc_key) if raw is None else Put(doc_key, raw)],
                [_DOCUMENT], raw)
    if stored is None and raw is not None:  # a create: one guid names one object across its class tree
        for other in tree_kin(meta.cls):
            plan.check(Revision(keys.doc(other, guid), 0), Reason("kin", value=other))
    if meta.unique:
        _plan_unique(plan, keys, meta, guid, stored, new, owners)
    if meta.indexed:
        _plan_indexes(plan, keys, meta, guid, stored, new)
    for relation in meta.relations.values():
        _plan_relation(plan, keys, meta, guid, relation, stored, new, onetoone_ready)
    return plan


def gives_up_unique(meta: HybridMeta, stored: Document | None, new: Document | None) -> list[str]:
    """Return the unique properties whose value ``stored`` holds and ``new`` (``None``: a delete) gives up:
    those whose keys a write may read before it plans (:func:`dal.objects.views.unique_owners`)."""
    if stored is None or not meta.unique:
        return []
    after = new or {}
    return [prop.name for prop in meta.unique
            if stored.get(prop.name) is not None and not same(stored[prop.name], after.get(prop.name))]


def read_owners(store: PersistentStore, keys: list[str]) -> dict[str, Entry | None]:
    """Return key -> its stored entry (``None``: absent) for the keys of unique values a write gives up
    (:func:`gives_up_unique`), read in one call: the ``owners`` of :func:`plan_write`."""
    found = store.get_many(keys) if keys else {}
    return {key: found.get(key) for key in keys}


def _plan_unique(plan: Plan, keys: Keys, meta: HybridMeta, guid: str, stored: Document | None,
                 new: Document | None, owners: Mapping[str, Entry | None]) -> None:
    """Move the unique keys of changed unique properties; a new value's key must not exist yet. The key
    of a value given up is deleted only if it names this object, when read (see :func:`plan_write`)."""
    before, after = stored or {}, new or {}
    for prop in meta.unique:
        old, value = before.get(prop.name), after.get(prop.name)
        if same(old, value) and stored is not None:
            continue
        if old is not None and stored is not None:
            old_key = keys.unique(meta.name, prop.name, old)
            if old_key not in owners:  # not read: a key of a built property names its holder
                plan.ops.append(Delete(old_key))
            else:  # checked as read: a concurrent change of its owner fails the commit, planned again
                entry = owners[old_key]
                plan.check(Revision(old_key, 0 if entry is None else entry.revision),
                           Reason("document", prop.name, old))
                if entry is not None and entry.value == guid.encode():
                    plan.ops.append(Delete(old_key))
        if value is not None:
            unique_key = keys.unique(meta.name, prop.name, value)
            plan.check(Revision(unique_key, 0), Reason("unique", prop.name, value))
            plan.ops.append(Put(unique_key, guid.encode()))


def _plan_indexes(plan: Plan, keys: Keys, meta: HybridMeta, guid: str, stored: Document | None,
                  new: Document | None) -> None:
    """Move the index entries of changed indexed properties."""
    before, after = stored or {}, new or {}
    for prop in meta.indexed:
        old, value = before.get(prop.name), after.get(prop.name)
        if stored is not None and new is not None and same(old, value):
            continue
        if stored is not None:
            plan.ops.append(Delete(keys.index(meta.name, prop.name, old, guid)))
            default = meta.stored_defaults[prop.name]
            if prop.name not in stored and default is not None:
                # a field the document lacks reads as its default, and `dal check --repair` files its
                # entry under that value (older data may hold one under None): drop both
                plan.ops.append(Delete(keys.index(meta.name, prop.name, default, guid)))
        if new is not None:
            plan.ops.append(Put(keys.index(meta.name, prop.name, value, guid), b""))


def _plan_relation(plan: Plan, keys: Keys, meta: HybridMeta, guid: str, relation: Relation,
                   stored: Document | None, new: Document | None, onetoone_ready: frozenset[str]) -> None:
    """Move the link (and one-to-one key) of a changed relation; its new target must exist."""
    old = (stored or {}).get(relation.guid_field)
    target_guid = (new or {}).get(relation.guid_field)
    if relation.target is None or (stored is not None and new is not None and same(old, target_guid)):
        return
    target = relation.target._meta.name
    if old is not None:
        plan.ops.append(Delete(keys.link(target, old, meta.name, relation.name, guid)))
        if relation.onetoone:
            plan.ops.append(Delete(keys.onetoone(meta.name, relation.name, old)))
    if target_guid is None:
        return
    # checked inside the commit: a concurrent delete of the target cannot slip in between;
    # only this very object (same hybrid, same guid) is known to exist without a check
    if target_guid != guid or target != meta.name:
        plan.check(Exists(keys.doc(target, target_guid)), Reason("target", relation.name, target_guid))
    plan.ops.append(Put(keys.link(target, target_guid, meta.name, relation.name, guid), b""))
    if relation.onetoone:
        # one key per target, across the subclass hybrids holding the relation too
        taken = Reason("onetoone", relation.name, target_guid)
        for member in family(relation):
            assert member.owner is not None
            source = member.owner._meta.name
            plan.check(Revision(keys.onetoone(source, member.name, target_guid), 0), taken)
            if relation.name not in onetoone_ready:  # keys of older data may be missing
                plan.check(PrefixEmpty(keys.links(target, target_guid, source, member.name)), taken)
        plan.ops.append(Put(keys.onetoone(meta.name, relation.name, target_guid), guid.encode()))


def merge(meta: HybridMeta, original: Document, ours: Document, theirs: Document,
          datastore_wins: bool | None, label: str) -> Document:
    """Merge a concurrent change field by field: ``original`` is the stored document this object was
    loaded as, ``theirs`` the one stored now, ``ours`` the document the save built.

    A field only we changed keeps ours; only they changed takes theirs; both changed (even
    to the same value) follows ``datastore_wins``: ``False`` ours, ``True`` theirs, ``None``
    raises ConcurrencyError. Changed means differing from ``original`` as stored and as this
    version reads both (:func:`~dal.objects.spelling.unchanged`): another writer's value spelt otherwise
    (a +00:00 datetime, a set in its own order) is no change of theirs, a read dropping part of a value
    (a newer model's nested field) proves nothing; a field a document lacks reads as its default on both
    sides. Only typed fields pay a read, and only here, after a conflict.
    A typed value taken from ``theirs`` that this version cannot read (another version of the model
    declares the field otherwise) raises InvalidValueError, before anything is written.
    """
    before, merged = meta.with_defaults(original), meta.with_defaults(theirs)
    typed = meta.typed
    conflicts, mine = [], set()
    for name, value in ours.items():
        old, check = before.get(name), typed.get(name)
        if unchanged(check, value, old):
            continue
        if name in merged and not unchanged(check, merged[name], old, theirs=True):
            if datastore_wins is None:
                conflicts.append(name)
            elif datastore_wins:
                continue
        merged[name] = value
        mine.add(name)
    if conflicts:
        raise ConcurrencyError(
            f"{label}: {', '.join(sorted(conflicts))} changed both here and in the store since this "
            "object was loaded; refresh() and reapply, or save with datastore_wins=False/True to pick a side")
    for name, check in meta.converters:  # ours were written from values of this object: they read
        if name not in mine:
            read_stored(label, name, check, merged[name], taken=True)
    return merged


def retry_from(context: Context, doc_key: str, result: CommitResult, attempt: int) -> Entry | None:
    """Return the stored document a retry of a commit that lost a race starts from: the one the failed
    commit returned, at once; when a retry lost too (``attempt`` > 0), the one stored after a jittered,
    exponentially growing pause. A document read before the pause is old once it ends: against a writer
    saving every few milliseconds, every retry planned on it lost again, and the save failed with
    RaceConditionError although each merge on its own would commit."""
    if not attempt:
        return result.current.get(doc_key)
    time.sleep(_jitter.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))))
    return context.persistent.get(doc_key)


def changed_fields(original: Document, ours: Mapping[str, Any]) -> list[str]:
    """Return the fields of ``ours`` that differ from ``original``."""
    return [name for name, value in ours.items() if not same(value, original.get(name))]


#: ``json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``, built once
#: rather than per call; NaN and infinities raise ValueError: what is written must be JSON
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(document: Document) -> bytes:
    return _ENCODER.encode(document).encode()


def encode_canonical(value: Any) -> str:
    """Return ``value`` as canonical text (see ``dal/values.py``)."""
    return canonical(value)


def decode(raw: bytes) -> Document:
    """Return a stored document decoded (``json.loads``'s result and errors, faster: see ``decoding``)."""
    return decoding.document(raw)


def changes(meta: HybridMeta, stored: Document, ours: Document,
            extra: Mapping[str, Any]) -> tuple[Document, list[str]]:
    """Return the document a save of ``ours`` writes (``extra``, fields the model does not declare,
    kept) and the fields of it that differ from ``stored``. A typed value read with less than it holds
    (a newer model's nested field, see :func:`keep_unread`) is put back in ``ours`` and is no change.
    TypeError or ValueError when a value changed in place no longer encodes."""
    new = {**extra, **ours}
    changed = changed_fields(stored, new)
    if changed and meta.converters and keep_unread(meta, stored, ours, changed):
        new = {**extra, **ours}
        changed = changed_fields(stored, new)
    return new, changed


def edited_since(meta: HybridMeta, stored: Document, ours: Document, extra: Mapping[str, Any]) -> list[str]:
    """Return the fields of ``ours`` an object loaded as ``stored`` changed since: differing from it as
    spelt (:func:`changes`, which keeps a newer model's nested data) and as read (:func:`edited_fields`:
    a value stored spelt otherwise than this version writes it is as loaded)."""
    return edited_fields(meta, stored, ours, changes(meta, stored, ours, extra)[1])


def keep_unread(meta: HybridMeta, stored: Document, ours: Document, changed: Collection[str]) -> bool:
    """Put back into ``ours`` the stored value of each typed field the object did not change (read
    with the declared type and written again, it is what ``ours`` holds) and that the declared type
    does not read whole (a nested field of a newer model): kept exactly as that model wrote it.
    A value read whole is left as this version writes it (a set an earlier version stored unsorted
    is rewritten sorted). Return whether any was put back. Only typed fields ``changed`` names are
    looked at."""
    kept = False
    for name, validator in meta.converters:
        if name not in changed or name not in stored:
            continue
        try:
            read = validator.to_json(validator.from_json(stored[name]))
        except (TypeError, ValueError):  # the stored value no longer reads: the save rewrites it
            continue
        if same(read, ours[name]) and dropped_paths(stored[name], read):
            ours[name] = stored[name]
            kept = True
    return kept


def saved_values(meta: HybridMeta, document: Document, values: Mapping[str, Any], ours: Document,
                 edited: Collection[str] | None = None, label: str = "") -> Document:
    """Return an object's values once ``document`` is stored: each field's stored form, a typed field's
    read with its type, except where the object's own value (in ``values``) is what was written, its JSON
    form (in ``ours``, the document the save built from it) being the stored one. That value is kept, the
    very object: a reference the application took (``settings = obj.settings``) still changes what the
    next save stores. A value the stored form differs from (merged in from the store) is read afresh, and
    so is one the save changed (in ``edited``; None: any) that reads back otherwise: a ``list[float]``
    holding the int 2 appended in place, stored as 2.0. The object holds what a load would give. A stored
    value that no longer reads is an InvalidValueError naming the field (``label``: the object), as in a load.
    """
    data = {name: document.get(name) for name in meta.stored_defaults}  # in declaration order
    for name, validator in meta.converters:
        written, mine, value = data[name], ours.get(name), values[name]
        # the save wrote ours itself (is), unless it merged; after a merge, compared as stored values
        if not (written is mine or same(written, mine)):
            data[name] = read_stored(label, name, validator, written)
        elif isinstance(value, FROZEN) or (edited is not None and name not in edited):
            data[name] = value  # validated when assigned, or loaded: reads back as itself
        else:  # changed in place, maybe into what reads back otherwise (an int where a float is declared)
            read = read_stored(label, name, validator, written)
            data[name] = value if identical(value, read) else read
    return data
