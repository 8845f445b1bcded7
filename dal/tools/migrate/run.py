"""The state of one ``dal migrate`` run, its store access, and helpers reading stored documents.

:class:`MigrationRun` is the base that the steps (:mod:`dal.tools.migrate.steps`) and the per-hybrid
pass (:mod:`dal.tools.migrate.keys`) share; :class:`dal.tools.migrate.migrator.Migrator` combines them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dal.backends.base import Check, CommitResult, Entry, Op
from dal.backends.paging import scan_batches
from dal.cache.versions import changed_versions
from dal.objects.transaction import Document, decode, encode, encode_canonical
from dal.tools.migrate.migrations import Migration, MigrationError, OldLink, Operation
from dal.tools.migrate.report import ProgressFactory, Report
from dal.values import same

if TYPE_CHECKING:
    from dal.config import Context
    from dal.model.meta import HybridMeta
    from dal.objects.schema import SchemaRecord

SCAN_BATCH = 500
#: commits tried on one object before giving up (each retry re-reads it)
ATTEMPTS = 50
#: test hook: exit the process (status 75) after this many object commits, as a kill would
EXIT_AFTER_ENV = "DAL_MIGRATE_EXIT_AFTER"


@dataclass(frozen=True)
class CompleteKeys:
    """The fields of one hybrid whose keys of each kind are complete (listed ready in its record).

    Each kind on its own: a property both indexed and unique may have its index complete while its
    unique keys are still to be built (or left unbuilt by a violation), or the other way round; the
    complete kind must follow every change (``schema.ready_indexes`` needs both, for queries only).
    """

    indexed: frozenset[str] = frozenset()
    unique: frozenset[str] = frozenset()
    onetoone: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.indexed or self.unique or self.onetoone)

    def lost(self, now: CompleteKeys) -> list[str]:
        """Return the fields with a kind of key listed here that ``now`` no longer lists."""
        return sorted((self.indexed - now.indexed) | (self.unique - now.unique)
                      | (self.onetoone - now.onetoone))

    @classmethod
    def of(cls, record: SchemaRecord | None, meta: HybridMeta) -> CompleteKeys:
        if record is None:
            return cls()
        return cls(record.indexed & {prop.name for prop in meta.indexed},
                   record.unique & {prop.name for prop in meta.unique}, record.onetoone_ready_for(meta))


class MigrationRun:
    """What one run of ``dal migrate`` holds, and how it reads and commits."""

    def __init__(self, context: Context, metas: list[HybridMeta], migrations: list[Migration], *,
                 dry_run: bool, emit: Callable[[str], None] | None, progress: ProgressFactory) -> None:
        self.context = context
        self.keys = context.keys
        self.metas = sorted(metas, key=lambda meta: meta.name)
        self.migrations = migrations
        self.dry_run = dry_run
        self.progress = progress
        self.report = Report(dry_run)
        self._emit = emit
        #: hybrid -> (its meta, when keys were marked ready, the fields marked): checked at the end
        self._to_verify: dict[str, tuple[HybridMeta, float, CompleteKeys]] = {}
        #: hybrid -> the objects this run's steps wrote: ``report.objects`` counts each object once,
        #: though several steps and then the pass of defaults and keys may write it (that pass writes
        #: an object once, so only step-written guids are kept: memory grows with what steps rewrite)
        self._stepped: dict[str, set[str]] = {}
        #: names this run's key check markers (see dal.tools.migrate.verify)
        self.run_id = uuid.uuid4().hex
        #: hybrid -> this run's marker (fields, bound, revision); and the markers found by the survey
        self._own_marks: dict[str, tuple[dict[str, list[str]], int, int]] = {}
        self._foreign_marks: dict[str, dict[str, tuple[dict[str, list[str]], int, int]]] = {}
        #: one-to-one violations already reported (see HybridMigrator._first_reports)
        self._reported: set[tuple[str, str, str, frozenset[str]]] = set()
        #: source hybrid -> relation it does not declare -> its stored link keys (read once, when asked)
        self._undeclared: dict[str, dict[str, list[str]]] | None = None
        exit_after = os.environ.get(EXIT_AFTER_ENV)
        self._exit_after = int(exit_after) if exit_after else None

    def say(self, line: str) -> None:
        self.report.lines.append(line)
        if self._emit is not None:
            self._emit(line)

    def _changed(self, hybrid: str, guid: str, *, by_step: bool = False) -> None:
        """Count an object this run wrote (once per hybrid, whatever passes wrote it)."""
        if by_step:
            stepped = self._stepped.setdefault(hybrid, set())
            if guid in stepped:
                return
            stepped.add(guid)
        elif guid in self._stepped.get(hybrid, ()):
            return
        self.report.objects[hybrid] = self.report.objects.get(hybrid, 0) + 1

    # --- store access -------------------------------------------------------------------------

    def _commit(self, checks: list[Check], ops: list[Op]) -> bool:
        return self._commit_result(checks, ops).ok

    def _commit_result(self, checks: list[Check], ops: list[Op],
                       invalidate: Sequence[str] = ()) -> CommitResult:
        result = self.context.commit(checks, ops, invalidate)
        self._count_commit()
        return result

    def _count_commit(self) -> None:
        self.report.commits += 1
        if self._exit_after is not None and self.report.commits >= self._exit_after:
            os._exit(75)  # the test hook: die like a killed process, without cleanup

    def _invalidation(self, meta: HybridMeta, guid: str, before: Document, after: Document) -> list[str]:
        """Return what caches hold about an object rewritten from ``before`` to ``after``, as a save does."""
        keys = self.keys
        return [keys.cached_doc(meta.name, guid),
                *(keys.cached_dynamic(meta.name, guid, name) for name in meta.dynamics),
                *changed_versions(keys, meta, guid, before, after)]

    def _step_cursor(self, number: int, meta: HybridMeta) -> str:
        """Return the key of the last document of ``meta`` step ``number`` rewrote in a run that stopped
        ("": none): the documents up to it are already as the step leaves them."""
        cursor = self.context.persistent.get(self.keys.migration_cursor(number, meta.name))
        return "" if cursor is None else cursor.value.decode()

    def _scan(self, prefix: str, start: str | None = None) -> Iterator[tuple[str, Entry]]:
        for batch in self._batches(prefix, start):
            yield from batch

    def _batches(self, prefix: str, start: str | None = None) -> Iterator[list[tuple[str, Entry]]]:
        return scan_batches(self.context.persistent, prefix, SCAN_BATCH, start_after=start)

    def _count(self, prefix: str, start: str | None = None) -> int:
        return sum(len(batch) for batch in self._batches(prefix, start))

    def _key_fields(self, prefix: str) -> list[str]:
        """Return the field names having keys under ``prefix``, one short scan per field."""
        names: list[str] = []
        start: str | None = None
        while True:
            batch = self.context.persistent.scan(prefix, start_after=start, limit=1)
            if not batch:
                return names
            name = batch[0][0][len(prefix):].split("/", 1)[0]
            names.append(name)
            start = f"{prefix}{name}0"  # "0" sorts right after "/": skips every key of this field


def apply_operations(operations: list[Operation], doc: Document) -> tuple[Document, list[OldLink]]:
    after = json.loads(encode_canonical(doc))
    old_links: list[OldLink] = []
    for operation in operations:
        old_links += operation.apply(after)
    return after, old_links


def step_document(number: int, operations: list[Operation], meta: HybridMeta, guid: str,
                  before: Document) -> tuple[Document | None, list[OldLink]]:
    """Return what step ``number`` stores for ``before`` (None: it changes nothing) and the links it drops.

    The one place a run and a dry run decide this, so a dry run refuses exactly what a run does.
    """
    after, old_links = apply_operations(operations, before)
    check_encodable(number, meta, guid, after)
    if not old_links and encode_canonical(after) == encode_canonical(before):
        return None, old_links
    check_readable(number, meta, guid, before, after)
    # a declared field the step dropped reads as its default: store that, so its keys (moved from
    # the stored document's values) are those of the value reads return and queries ask for; fields
    # the document never held are left to the fill pass (a mandatory one without a default, which it
    # can fill with None only, is reported by its survey as a violation)
    defaults = meta.with_defaults(after)
    after.update((name, defaults[name]) for name in before if name not in after and name in defaults)
    if not old_links and encode_canonical(after) == encode_canonical(before):
        return None, old_links
    return after, old_links


def check_encodable(number: int, meta: HybridMeta, guid: str, after: Document) -> None:
    """Refuse a document JSON cannot hold as a run stores it (a ``datetime`` object, a set, bytes, NaN,
    a key that is not a str), naming the field: the same in a dry run and a run."""
    try:
        encode(after)
    except (TypeError, ValueError):
        pass
    else:
        return
    for name, value in after.items():
        try:
            if not isinstance(name, str):
                raise TypeError(f"the key {name!r} is not a str")
            encode({name: value})
        except (TypeError, ValueError) as exc:
            raise MigrationError(
                f"step {number} would store {meta.cls.__name__}.{name!s} = {value!r} in {guid}, which JSON "
                f"cannot hold ({exc}); return JSON values (a datetime as its ISO text, a list for a set), "
                "fix the step and run dal migrate again") from exc


def check_readable(number: int, meta: HybridMeta, guid: str, before: Document, after: Document) -> None:
    """Refuse to store what the current model could not read back (a transform's mistake)."""
    for name, value in after.items():
        if name in before and same(before[name], value):
            continue
        prop = meta.properties.get(name)
        try:
            if prop is not None:
                prop.validator(prop.validator.from_json(value))
            elif name in meta.field_set and value is not None and not isinstance(value, str):
                raise ValueError("a relation holds a guid (str) or None")
        except (TypeError, ValueError) as exc:
            raise MigrationError(
                f"step {number} would store {meta.cls.__name__}.{name} = {value!r} in {guid}, which the "
                f"declared model cannot read ({exc}); fix the step and run dal migrate again") from exc
    check_mandatory(number, meta, guid, before, after)


def check_mandatory(number: int, meta: HybridMeta, guid: str, before: Document, after: Document) -> None:
    """Refuse None in a mandatory property or relation the step changes (sets to None, or drops and it
    has no default): the object could not be saved again, not even unchanged."""
    mandatory = [(name, name) for name, prop in meta.properties.items() if prop.mandatory]
    mandatory += [(relation.guid_field, name) for name, relation in meta.relations.items()
                  if relation.mandatory]
    for stored, label in mandatory:
        if stored not in before and stored not in after:
            continue  # never held: the fill pass's survey reports it (a violation, kind "mandatory")
        value = after[stored] if stored in after else meta.stored_defaults.get(stored)
        if value is None and not (stored in before and same(before[stored], value)):
            how = "sets it to None" if stored in after else "drops it and it has no default"
            raise MigrationError(
                f"step {number} would store {meta.cls.__name__}.{label} = None in {guid}, which is mandatory "
                f"(the step {how}); the object could not be saved again: give it a value in the step, "
                "fix the step and run dal migrate again")


def decode_doc(meta: HybridMeta, guid: str, raw: bytes) -> Document:
    try:
        return decode(raw)
    except ValueError as exc:
        raise MigrationError(
            f"the stored document of {meta.cls.__name__} {guid} is not a JSON object ({exc}); "
            "run dal check, repair or delete it, and run dal migrate again") from exc
