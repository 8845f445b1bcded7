"""How an object is written: save (with merge and retries), delete, and settling an unknown outcome.

:class:`Writes` is the part of :class:`~dal.objects.dataobject.DataObject` that commits;
``DataObject`` adds loading, attribute access and views. Every write is one transaction
planned by :mod:`dal.objects.transaction`, through the configured context's commit (and
journal), invalidating the object's cache entries and the version tokens of what changed
(:mod:`dal.cache.versions`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dal.backends.base import Entry
from dal.cache.journal import RESOLVE_WINDOW, Outcome, Uncertain
from dal.cache.versions import changed_versions
from dal.config import Context, current
from dal.exceptions import (
    CommitOutcomeUnknownError,
    InvalidRelationError,
    MissingMandatoryFieldsError,
    ObjectNotFoundError,
    RaceConditionError,
    UniqueConstraintError,
)
from dal.model.meta import HybridMeta
from dal.model.registry import hybrids
from dal.objects.models import missing_mandatory
from dal.objects.origin import check_links, check_write
from dal.objects.refusals import (
    check_changed,
    check_containers,
    check_datastore_wins,
    check_mirror_fields,
    check_typed,
    unstorable,
)
from dal.objects.relations import assume_unlinked, check_abandon, onetoone_refusal, plan_unlink
from dal.objects.schema import ensure_recorded, onetoone_ready
from dal.objects.spelling import edited_fields
from dal.objects.transaction import (
    Document,
    Plan,
    changed_fields,
    changes,
    decode,
    encode,
    merge,
    plan_write,
    retry_from,
    saved_values,
)
from dal.objects.views import SCHEMA, stale, unique_owners, writer_view
from dal.values import same

#: commits tried before a save gives up with RaceConditionError
MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class _Save:
    """What one save() call merges a concurrent change against."""

    ours: Document
    original: Document
    datastore_wins: bool | None
    edited: Collection[str]  # the fields ours changes (all, for a new object)


class Writes:
    """Saving and deleting an object: the writing half of ``DataObject``."""

    _meta: ClassVar[HybridMeta]
    guid: str
    _data: dict[str, Any]
    _raw: bytes | None
    _revision: int
    _objects: dict[str, Any]
    _extra: dict[str, Any]
    # set on some objects only (never on a class), named here so that no Dynamic takes their names
    # for its loader (dal.model.reserved refuses a loader named like anything DataObject holds)
    _siblings: list[Any]
    #: the store and namespace (cache root) it was loaded from or saved to; None: not known
    _loaded_from: str | None
    _uncertain: tuple[Any, ...]
    _mirror_checked: bool
    _deleted: bool
    _dynamic_names: dict[Any, Any]

    def save(self, datastore_wins: bool | None = False) -> None:
        """Store this object in one atomic transaction, merging concurrent changes to other fields.

        The same field changed here and in the store since this object was loaded: with
        ``datastore_wins=False`` ours wins, ``True`` theirs, ``None`` raises ConcurrencyError.
        Still conflicting after the retries: RaceConditionError. On any error this object
        is left exactly as it was, except that an earlier save whose outcome was unknown, found
        applied first, is now part of it. CommitOutcomeUnknownError: call save() again.
        """
        check_datastore_wins(datastore_wins, f"{type(self).__name__}.save()")
        self._check_mandatory()
        context = current()
        prepared = self._prepare(context, datastore_wins)
        if prepared is not None:
            self._commit_save(context, *prepared)

    def _prepare(self, context: Context, datastore_wins: bool | None
                 ) -> tuple[_Save, Document | None, Document] | None:
        """Return what a save merges against, the stored document (None for a new object) and the
        document to write; None when nothing changed. Settles an earlier save whose outcome was unknown
        first. ``save()`` and ``save_many()`` both start here."""
        check_write(self._label(), self, context)
        if "_deleted" in self.__dict__:  # as when another instance deleted it: never brought back unseen
            raise ObjectNotFoundError(f"{self._label()} was deleted by its delete(); create a new object to "
                                      "store it again")
        check_links(self, self._objects, context)  # a related object of another store: before anything
        if "_uncertain" in self.__dict__:
            self._settle(context)
        ensure_recorded(context, self._meta)
        original = decode(self._raw) if self._raw is not None else {}
        stored: Document | None = original if self._raw is not None else None
        meta, label = self._meta, self._label()
        new = ours = {}
        try:  # writing a typed value (changed in place: its type may refuse it) and comparing encode values
            ours = self._document()
            new = {**self._extra, **ours}
            changed: Collection[str] = new.keys()
            if stored is not None:
                new, changed = changes(meta, stored, ours, self._extra)
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: a list put in itself
            # these name the field and the value, when they can
            check_typed(label, self._data, meta.converters)
            check_containers(label, new, new.keys())
            raise unstorable(label, exc) from exc
        # nothing changed as read (a value stored spelt otherwise than ours is as loaded); only typed
        # fields can differ as spelt alone, so a change of another field needs no read
        typed = meta.typed
        if stored is not None and stored.keys() == new.keys() and (not changed or (
                all(name in typed for name in changed) and not edited_fields(meta, stored, ours, changed))):
            return None
        check_changed(label, meta, self._data, new, changed)
        if meta.mirror is not None and stored is not None:
            check_mirror_fields(label, meta, changed)
        return _Save(ours, original, datastore_wins, changed), stored, new

    def _label(self) -> str:
        return f"{type(self).__name__} {self.guid}"

    def _plan(self, context: Context, stored: Document | None, revision: int, new: Document,
              ready: frozenset[str]) -> tuple[Plan, list[str]]:
        """Return the transaction writing ``new`` over ``stored`` and the cache keys it invalidates."""
        try:
            plan = plan_write(context.keys, self._meta, self.guid, stored, revision, new, ready,
                              unique_owners(context, self._meta, stored, new))
        except (TypeError, ValueError) as exc:
            raise unstorable(self._label(), exc) from exc
        view = writer_view(context, self._meta, ensure=True) if stored is None else None
        if view is not None and view.check is not None:
            plan.check(view.check, SCHEMA)  # a create names the versions of the fields its view lists
        # a brand-new guid has no cached document (a load before the save cached nothing), but
        # a dynamic may have been read before the first save, and cached query results may change
        invalidate = [*self._cache_keys(context, document=stored is not None),
                      *changed_versions(context.keys, self._meta, self.guid, stored, new,
                                        {} if view is None else view.undeclared)]
        return plan, invalidate

    def _commit_save(self, context: Context, save: _Save, stored: Document | None, new: Document) -> None:
        """Commit ``new`` over ``stored``; after a concurrent change, merge it in and try again."""
        revision = self._revision
        label = f"{type(self).__name__} {self.guid}"
        for attempt in range(MAX_ATTEMPTS):  # readiness read each time: a schema check may have failed
            plan, invalidate = self._plan(context, stored, revision, new, onetoone_ready(context, self._meta))
            try:
                result = context.commit(plan.checks, plan.ops, invalidate)
            except CommitOutcomeUnknownError as exc:
                # learnt by the next save(), delete() or refresh(), which never apply it twice
                self._remember_uncertain(exc.commit, plan.raw, invalidate, save.ours)
                raise
            if result.ok:
                # a revision not known (0) becomes -1: the next commit fails its check and merges
                self._saved(context, new, result.revision or -1, merged=attempt > 0, ours=save.ours,
                            edited=save.edited, raw=plan.raw)
                return
            failed = [plan.reasons[index] for index in result.failed]
            if SCHEMA in failed:
                stale(context, self._meta)  # planned from an old view of the record: read it again
            elif all(reason.kind != "document" for reason in failed):
                self._raise_constraint(plan, result.failed)
            elif 0 not in result.failed:  # only a unique key it gives up changed owner: plan again
                continue
            # the stored document moved on: whatever the cache holds of this object is old
            context.invalidate(*self._cache_keys(context))
            entry = retry_from(context, context.keys.doc(self._meta.name, self.guid), result, attempt)
            stored, revision, new = self._rebase(entry, save, new, label)
        raise RaceConditionError(
            f"{label} kept changing concurrently; gave up after "
            f"{MAX_ATTEMPTS} attempts. Retry the operation, or reduce contention on this object")

    def _rebase(self, entry: Entry | None, save: _Save, new: Document,
                label: str) -> tuple[Document | None, int, Document]:
        """Return (stored, revision, what to write) after a commit failed on the document's revision,
        ``entry`` being the document stored now."""
        meta = self._meta
        if entry is None:
            if self._revision:
                raise ObjectNotFoundError(
                    f"{label} was deleted by another writer while this "
                    "object was being saved; create a new object to store it again")
            return None, 0, new
        stored = decode(entry.value)
        # compared with what this object was loaded as, both as this version reads them: a field spelt
        # otherwise (or lacking: its default) is a change of neither side for that alone
        merged = merge(meta, save.original, save.ours, stored, save.datastore_wins, label)
        return stored, entry.revision, merged

    def _remember_uncertain(self, commit: object, raw: bytes | None, invalidate: list[str],
                            ours: Document) -> None:
        """Keep what a commit whose outcome is unknown wrote, for the next save() to settle.

        Copies, not the documents the save built: their lists and dicts are this object's own,
        which the application may change in place before the outcome is learnt; settling must
        compare with what was committed, not with what the object has become.
        """
        assert raw is not None  # a save's plan always holds the document it writes
        self.__dict__["_uncertain"] = (commit, raw, invalidate, decode(encode(ours)))

    def _settle(self, context: Context) -> None:
        """Learn whether this object's last save, whose outcome was unknown, was applied.

        Applied: the object becomes what that save stored (another writer's fields merged in
        included), and the values changed here since are kept on top, to be saved next. Not
        applied: nothing to do. Still unknown: raise again, rather than risk applying it twice;
        past RESOLVE_WINDOW, say that it will never be known, and let the object be used again.
        """
        uncertain, written, invalidate, ours_then = self.__dict__["_uncertain"]
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
            self._saved(context, decode(written), revision or -1, merged=True, ours=now, raw=written)
            for name in since:
                self._data[name] = values[name]

    def _saved(self, context: Context, document: Document, revision: int, *, merged: bool, ours: Document,
               edited: Collection[str] | None = None, raw: bytes | None = None) -> None:
        """Become what was stored: ``document``, as ``raw`` (the bytes the commit wrote, when known), the
        save having built ``ours`` (the JSON form of each field) from this object's values, changing the
        fields ``edited`` (None: any)."""
        meta = self._meta
        if raw is None:
            raw = encode(document)
        data = saved_values(meta, document, self._data, ours, edited, self._label())  # ours kept if written
        changed = changed_fields(ours, document) if merged else []
        state = self.__dict__
        state["_data"] = data
        state["_raw"] = raw
        state["_revision"] = revision
        state["_extra"] = {k: v for k, v in document.items() if k not in meta.field_set}
        state["_loaded_from"] = context.seen.scope
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
        check_write(self._label(), self, context)
        if "_uncertain" in self.__dict__:
            self._settle(context)
        meta = self._meta
        # only None means nothing: a falsy value of the wrong kind (0, "", b"") is refused too
        covered = check_abandon(meta, () if abandon is None else abandon)
        doc_key = context.keys.doc(meta.name, self.guid)
        stored: Document | None = decode(self._raw) if self._raw is not None else None
        revision = self._revision
        if stored is None:
            entry = context.persistent.get(doc_key)
            stored, revision = (None, 0) if entry is None else (decode(entry.value), entry.revision)
        # links to a hybrid no declared relation targets can only come from another version of the
        # model: the commit checks that there are none, and they are scanned only if there are
        scanned = bool(meta.reverse)
        for attempt in range(MAX_ATTEMPTS):
            if stored is None:
                # already gone (by another writer, or by our own commit whose answer was lost and
                # that was then resent): drop whatever a cache may still hold of it
                context.invalidate(*self._cache_keys(context))
                break
            plan = plan_write(context.keys, meta, self.guid, stored, revision, None,
                              owners=unique_owners(context, meta, stored, None))
            unlink = (plan_unlink(context, meta, self.guid, covered) if scanned
                      else assume_unlinked(context, meta, self.guid))
            view = writer_view(context, meta, ensure=False)
            invalidate = [*self._cache_keys(context), *unlink.cache_keys,
                          *changed_versions(context.keys, meta, self.guid, stored, None, view.undeclared)]
            checks = plan.checks + unlink.checks + ([] if view.check is None else [view.check])
            result = context.commit(checks, plan.ops + unlink.ops, invalidate)
            if result.ok:
                if result.revision > 0:  # a cached copy older than the delete is stale here
                    context.seen.note(meta.name, self.guid, result.revision)
                    # and so is one of a referrer the delete rewrote (abandon): written here too
                    for hybrid, guid in unlink.rewritten:
                        context.seen.note(hybrid, guid, result.revision)
                break
            if view.check is not None and len(checks) - 1 in result.failed:
                stale(context, meta)  # planned from an old view of the record: read it again
            linked = not scanned and len(plan.checks) in result.failed
            scanned = scanned or linked  # links after all: scan them next, to refuse or unlink them
            if 0 not in result.failed and (linked or not attempt):
                continue  # links found (not a race), or a referrer changed: plan again (scanning) at once
            entry = retry_from(context, doc_key, result, attempt)
            if entry is None or entry.revision != revision:  # the document itself changed or vanished
                context.invalidate(*self._cache_keys(context))
                stored, revision = (None, 0) if entry is None else (decode(entry.value), entry.revision)
        else:
            raise RaceConditionError(
                f"{type(self).__name__} {self.guid} kept changing while being deleted; retry")
        self.__dict__.update(_raw=None, _revision=0, _deleted=True)

    def _cache_keys(self, context: Context, *, document: bool = True) -> list[str]:
        meta, keys = self._meta, context.keys
        cached = [keys.cached_doc(meta.name, self.guid)] if document else []
        cached += [keys.cached_dynamic(meta.name, self.guid, name) for name in meta.dynamics]
        return cached

    def _check_mandatory(self) -> None:
        meta = self._meta
        missing = missing_mandatory(meta, self._data)
        unresolved = [hybrids.undeclared(rel) for rel in meta.relations.values()
                      if rel.target is None and self._data[rel.guid_field] is not None]
        if unresolved:  # not declared yet, or an abstract base: the registry says which
            raise InvalidRelationError(f"{'; '.join(unresolved)} (the link cannot be checked before saving)")
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
        if reason.kind == "kin":  # from_model() given a guid another writer stored in the tree meanwhile
            holder = hybrids.get(reason.value).__name__
            raise UniqueConstraintError(
                f"{name} {self.guid} cannot be created: its guid is stored as a {holder}, another hybrid of "
                f"{name}'s class tree, where one guid names one object; nothing was written. Load that one "
                f"({holder}(guid)), or give the model no guid to make a new {name}")
        relation = self._meta.relations[reason.field]  # one of another store was refused by _prepare
        target = relation.target.__name__ if relation.target is not None else "object"
        held = self._objects.get(reason.field)  # deleted by its delete() since assigned: it cannot be saved
        remedy = "link an existing one" if "_deleted" in getattr(held, "__dict__", {}) else \
            f"save the {target} first or link an existing one"
        raise ObjectNotFoundError(
            f"{name}.{reason.field} points at {target} {reason.value!r}, which is not stored; {remedy}")

    def _document(self) -> Document:
        """Return the JSON form of every stored field."""
        data = dict(self._data)
        for name, validator in self._meta.converters:
            data[name] = validator.to_json(data[name])
        return data

