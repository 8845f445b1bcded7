"""Loading a dump into a store, and copying one namespace into another.

A load reads the whole dump and validates all of it before it writes anything: the format,
every document against the declared model (the same validators an assignment runs), unique
values and one-to-one targets within the dump and against the store, existing guids, and
relation targets that are neither in the dump nor stored. Then it writes in batches, each batch
ONE commit holding its objects' documents with every unique key, index entry, one-to-one key
and link, planned by
:func:`dal.objects.transaction.plan_write` exactly as a save plans them. A failed batch writes
nothing; the batches before it stay written (each complete), and the same load run again
with ``replace`` finishes the job.

What is checked before writing is :mod:`dal.tools.transfer.preflight`; how the objects are
cut into batches, targets first, is :mod:`dal.tools.transfer.batches`.

:func:`copy` is :func:`dal.tools.transfer.dump.read_store` (the dump's scan) fed to
:func:`load`: documents are re-validated and keys rebuilt on the destination, never copied
raw, so a copy cannot carry the source's stale index entries or links along, and a
destination with another key encoding or layout version would still be written correctly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dal.backends.base import Check, Exists, Op, TooLargeError
from dal.cache.versions import changed_versions
from dal.config import Context, store_digest
from dal.exceptions import (
    BackendError,
    DalError,
    InvalidValueError,
    ObjectNotFoundError,
    OneToOneError,
    RaceConditionError,
    UniqueConstraintError,
)
from dal.keys import Keys
from dal.model.meta import HybridMeta
from dal.model.registry import hybrids
from dal.objects.relations import onetoone_refusal
from dal.objects.schema import ensure_recorded, onetoone_ready
from dal.objects.transaction import Document, Reason, decode, plan_write
from dal.objects.views import stale, unique_owners, writer_view
from dal.tools.transfer.batches import Item, commit_bytes, dependency_batches
from dal.tools.transfer.dump import Dump, count_documents, read_store
from dal.tools.transfer.preflight import (
    onetoone_within,
    preflight,
    present,
    shared_guids,
    unique_within,
    validate_items,
)
from dal.tools.transfer.steps import plan_steps, steps_changed

#: objects per commit
BATCH_SIZE = 100
#: operations, and separately checks, per commit: etcd refuses more by default (its --max-txn-ops)
MAX_TXN_OPS = 128
#: commits tried for one --replace batch while other writers keep changing its objects
MAX_ATTEMPTS = 5
#: what the commit journal (dal/cache/journal.py) adds to a refusal: said again below, batch by batch
_NOTHING_WRITTEN = "Nothing was written"

Advance = Callable[[int], None]


@dataclass
class LoadResult:
    """What a load wrote: objects per hybrid, commits, and how many replaced stored ones."""

    counts: dict[str, int]
    batches: int
    replaced: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class LoadInterrupted(KeyboardInterrupt):
    """A load stopped by Ctrl-C (a KeyboardInterrupt) once it had started writing batches.

    Each batch is one commit, so the store holds the first ``written_batches`` whole, and the
    batch that was being written either whole or not at all. The same load with ``replace``
    finishes the job: it overwrites what is there with the same data and writes the rest.
    """

    def __init__(self, written_batches: int, batches: int, written_objects: int, objects: int,
                 command: str = "load") -> None:
        super().__init__(written_batches, batches, written_objects, objects)
        self.written_batches = written_batches
        self.batches = batches
        self.written_objects = written_objects
        self.objects = objects
        #: what was interrupted, and is run again to finish: "load" or "copy"
        self.command = command

    def __str__(self) -> str:
        return f"{self.summary}; the same {self.command} with --replace (replace=True) finishes it"

    @property
    def summary(self) -> str:
        """Say which batches are stored."""
        done, total = self.written_batches, self.batches
        if done == 0:
            kept = f"none of the {total} batches was written completely"
        else:
            which, verbs = ("batch 1", "was written and is") if done == 1 else (f"batches 1-{done}",
                                                                               "were written and are")
            kept = f"{which} of {total} ({self.written_objects} of {self.objects} objects) {verbs} kept"
        if done < total:
            kept += f"; batch {done + 1}, being written when interrupted, is stored whole or not at all"
        return kept


@dataclass
class CopyResult:
    """What a copy wrote, and the objects per hybrid it then counted on each side."""

    load: LoadResult
    source: dict[str, int]
    destination: dict[str, int]

    @property
    def mismatches(self) -> dict[str, tuple[int, int]]:
        """Return ``{hybrid: (source count, destination count)}`` where they differ."""
        names = sorted(set(self.source) | set(self.destination))
        return {name: (self.source.get(name, 0), self.destination.get(name, 0)) for name in names
                if self.source.get(name, 0) != self.destination.get(name, 0)}


# --- loading ------------------------------------------------------------------------------


def load(context: Context, dump: Dump, *, replace: bool = False, batch_size: int = BATCH_SIZE,
         max_ops: int = MAX_TXN_OPS, progress: Advance | None = None, source: str = "the dump",
         command: str = "load") -> LoadResult:
    """Validate all of ``dump``, then write it into the namespace of ``context`` in atomic batches.

    An object whose guid is already stored is refused (DalError, before anything is written)
    unless ``replace``: then it is overwritten, guarded by the revision it was read at, and
    its old unique keys, index entries and links are removed in the same commit. Objects not
    in the dump are never touched. ``progress`` is called with the objects of each written
    batch. ``command`` is what messages say to run again to finish: "load", or "copy".

    The migration steps the dump's documents went through are recorded in the commit of the
    first batch (:func:`dal.tools.transfer.steps.plan_steps` refuses a namespace recording others).
    """
    if batch_size < 1 or max_ops < 1:
        raise InvalidValueError(f"batch size and operations per commit must be at least 1, not {batch_size} "
                                f"and {max_ops}")
    items = validate_items(context.keys, dump, source, command)
    shared_guids(context, items, source, command, dump.elsewhere)
    unique = unique_within(context.keys, items, source)
    unique.update(onetoone_within(context.keys, items, source))
    preflight(context, items, unique, replace, source, dump.elsewhere, command)
    steps = plan_steps(context, dump.steps, set(dump.hybrids), {item.doc_key for item in items}, replace,
                       source, command)
    batches = dependency_batches(context.keys, items, replace, batch_size, max_ops,
                                 max(len(steps[0]), len(steps[1])))
    for meta in {item.meta.name: item.meta for item in items}.values():
        # as a save does: into an empty hybrid, every key written is every key there is
        ensure_recorded(context, meta)
    if not batches and steps[1] and not context.commit(*steps).ok:
        raise steps_changed(context, command)
    written, replaced, committed = 0, 0, 0
    counts = {name: 0 for name in sorted({item.meta.name for item in items})}
    try:
        for number, batch in enumerate(batches, 1):
            try:
                replaced += _write(context, batch, replace, steps if number == 1 else ([], []), command)
            except DalError as exc:
                raise type(exc)(_not_written(exc, context.keys, batch, number, len(batches), written,
                                             command)) from exc
            committed, written = number, written + len(batch)
            for item in batch:
                counts[item.meta.name] += 1
            if progress is not None:
                progress(len(batch))
    except KeyboardInterrupt as exc:
        # Ctrl-C: say what is stored, so the load can be finished rather than guessed at
        raise LoadInterrupted(committed, len(batches), written, len(items), command) from exc
    return LoadResult(counts, len(batches), replaced)


def _not_written(exc: DalError, keys: Keys, batch: list[Item], number: int, total: int, written: int,
                 command: str) -> str:
    """Say why batch ``number`` of ``total`` was not written, what stays written, and how to finish.

    A batch the store refuses as too large fails the same way however often it is sent: the message
    names its largest object, and says to raise the store's limit or make that object smaller first.
    """
    said = str(exc).rstrip(". ")
    finish = f"{command} again" if number == 1 else f"{command} again with --replace (replace=True)"
    done = "no object was written" if number == 1 else (
        f"batches 1-{number - 1} ({written} objects) were written and are kept")
    if not isinstance(exc, TooLargeError):
        return f"{said}. Batch {number} of {total} was not written; {done}" + (
            "" if number == 1 else f"; {finish} to finish")
    said = said.removesuffix(_NOTHING_WRITTEN).rstrip(". ")
    sizes = {item.label: commit_bytes(keys, item) for item in batch}
    largest = max(sizes, key=sizes.__getitem__)
    what = (f"{largest} alone writes {sizes[largest]:,} bytes of keys and values" if len(batch) == 1 else
            f"its {len(batch)} objects write {sum(sizes.values()):,} bytes of keys and values, the largest "
            f"{largest} {sizes[largest]:,}")
    return (f"{said}. Batch {number} of {total} was not written: {what}, more than the store takes in one "
            f"request; {done}. Raise that limit or make {largest} "
            f"smaller{'' if len(batch) == 1 else ' (or write fewer objects per commit, --batch-size)'}, "
            f"then {finish} to finish")


def _write(context: Context, batch: list[Item], replace: bool, extra: tuple[list[Check], list[Op]],
           command: str) -> int:
    """Write one batch in one commit, with the ``extra`` checks and operations; return how many stored
    objects it replaced."""
    keys = context.keys
    written_here = {item.doc_key for item in batch}
    for attempt in range(MAX_ATTEMPTS):  # readiness read each time: a schema check may have failed
        ready = {item.meta.name: onetoone_ready(context, item.meta) for item in batch}
        stored = present(context, [item.doc_key for item in batch]) if replace else {}
        checks, ops, reasons, invalid = [], [], [], []
        views: dict[Check, HybridMeta] = {}  # the schema records the creates planned from, as a save's
        for item in batch:
            entry = stored.get(item.doc_key)
            before: Document | None = None
            if entry is not None:
                try:
                    before = decode(entry.value)
                except ValueError as exc:
                    raise BackendError(f"{item.label} cannot be replaced: its stored document is not a "
                                       f"JSON object ({exc}), so its old keys are unknown; run `dal check`"
                                       ) from exc
            revision = entry.revision if entry is not None else 0
            plan = plan_write(keys, item.meta, item.guid, before, revision, item.document,
                              ready[item.meta.name], unique_owners(context, item.meta, before, item.document))
            for check, reason in zip(plan.checks, plan.reasons, strict=True):
                if isinstance(check, Exists) and check.key in written_here:
                    continue  # this commit writes the target: it appears together with the link
                checks.append(check)
                reasons.append((item, reason))
            ops += plan.ops
            # cached documents, dynamics and query results
            if before is not None:
                invalid += _cache_keys(keys, item)
            # a create names the versions of the fields a newer model's record lists, as a save does
            view = writer_view(context, item.meta, ensure=True) if before is None else None
            if view is not None and view.check is not None:
                views[view.check] = item.meta
            invalid += changed_versions(keys, item.meta, item.guid, before, item.document,
                                        {} if view is None else view.undeclared)
        viewed = [*checks, *views]
        result = context.commit(viewed + extra[0], ops + extra[1], invalid)
        if result.ok:
            return sum(1 for item in batch if item.doc_key in stored)
        if any(index >= len(viewed) for index in result.failed):
            raise steps_changed(context, command)
        if any(index >= len(checks) for index in result.failed):  # a record changed since: plan again
            for index in result.failed:
                if len(checks) <= index < len(viewed):
                    stale(context, views[viewed[index]])
            continue
        failed = [reasons[index] for index in result.failed]
        if not (replace and all(reason.kind == "document" for _, reason in failed)):
            raise _refused(context, *failed[0])
        time.sleep(0.01 * 2 ** attempt)  # another writer changed an object we replace: read it again
    raise RaceConditionError(f"objects of this batch kept changing while being replaced ({MAX_ATTEMPTS} "
                             "attempts); load again when other writers are quieter")


def _cache_keys(keys: Keys, item: Item) -> list[str]:
    meta = item.meta
    return [keys.cached_doc(meta.name, item.guid),
            *(keys.cached_dynamic(meta.name, item.guid, name) for name in meta.dynamics)]


def _refused(context: Context, item: Item, reason: Reason) -> DalError:
    """Explain why the store refused a batch, naming the object that made it fail."""
    name = item.meta.cls.__name__
    if reason.kind == "document":
        return DalError(f"{item.label} was stored by another writer while loading; load with --replace to "
                        "overwrite it")
    if reason.kind == "onetoone":
        refusal = onetoone_refusal(context, item.meta.relations[reason.field], item.guid, reason.value)
        return OneToOneError(f"{refusal} (taken while loading)")
    if reason.kind == "unique":
        holder = context.persistent.get(context.keys.unique(item.meta.name, reason.field, reason.value))
        owner = holder.value.decode(errors="replace") if holder is not None else "another object"
        return UniqueConstraintError(f"{name}.{reason.field} must be unique: {item.guid} has "
                                     f"{reason.value!r}, which {name} {owner} took while loading; change one "
                                     "of them")
    if reason.kind == "kin":
        return UniqueConstraintError(f"{item.label} cannot be loaded: another writer stored its guid as a "
                                     f"{hybrids.get(reason.value).__name__} while loading, another hybrid of "
                                     f"{name}'s class tree, where one guid names one object; give one of "
                                     "them a new guid")
    relation = item.meta.relations[reason.field]
    target = relation.target.__name__ if relation.target is not None else "object"
    return ObjectNotFoundError(f"{item.label}.{reason.field} points at {target} {reason.value}, which was "
                               "deleted while loading; add it to the dump or clear the relation")


# --- copying ------------------------------------------------------------------------------


def _holds_data(context: Context) -> bool:
    """Tell whether ``context``'s namespace holds anything but schema records and journal records.

    A schema record is written before the first commit of a save or a load into an empty hybrid, and
    stays when that commit is refused (a copy whose first batch is too large for the store): the
    namespace holds no object, and copying into it again must not be refused as not empty.
    """
    store, keys = context.persistent, context.keys
    first = store.scan(keys.root, limit=1)
    if first and first[0][0].startswith(keys.schemas()):
        records = store.scan_keys([keys.schemas()])[keys.schemas()]
        first = store.scan(keys.root, start_after=records[-1], limit=1) if records else first
    # the journal (x/) sorts last: a namespace whose first key is in it holds no data
    return bool(first) and not first[0][0].startswith(keys.journal())



def copy(source: Context, destination: Context, *, only: Sequence[HybridMeta] | None = None,
         replace: bool = False, batch_size: int = BATCH_SIZE, max_ops: int = MAX_TXN_OPS,
         progress: Callable[[int], Advance] | None = None, source_name: object = None) -> CopyResult:
    """Copy the objects of one namespace into another (another store, usually), then count both sides.

    This is :func:`read_store` fed to :func:`load`: documents re-validated, keys rebuilt.
    A destination namespace holding anything is refused unless ``replace`` (which
    overwrites objects with the same guid and leaves others, which then show up as a count
    mismatch). ``progress``, given the number of objects to write, returns the callback to
    advance as batches are written. ``source_name``: how messages name the source's store
    (default: its URL as configured; the CLI opens it with ``mode=rw`` and names it without).
    """
    shown = source.persistent_url if source_name is None else source_name
    if store_digest(source.persistent) == store_digest(destination.persistent) \
            and source.namespace == destination.namespace:
        raise InvalidValueError(f"the source and destination are both namespace {source.namespace!r} of "
                                f"{shown}; copy into another namespace or store")
    if not replace and _holds_data(destination):
        raise DalError(f"namespace {destination.namespace!r} of {destination.persistent_url} is not empty; "
                       "copy into an empty namespace, or pass --replace to overwrite objects with the same "
                       "guid (objects only the destination holds are kept, and then fail the count check)")
    data = read_store(source, only)
    advance = progress(data.total) if progress is not None else None
    loaded = load(destination, data, replace=replace, batch_size=batch_size, max_ops=max_ops,
                  progress=advance, source=f"namespace {source.namespace!r} of {shown}", command="copy")
    names = set(data.hybrids)
    names |= {meta.name for meta in only} if only is not None else {cls._meta.name for cls in hybrids.all()}
    counted = count_documents(destination, sorted(names))
    expected = {name: len(data.hybrids.get(name, [])) for name in counted}
    return CopyResult(loaded, expected, counted)
