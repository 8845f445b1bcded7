"""``dal migrate``: bring the stored data of every hybrid up to its declared model.

In order:

1. Numbered migration steps (``dal.migrations``) not yet recorded as done run, lowest first.
   Each rewrites documents one at a time; every commit also moves the step's cursor
   (``m/cursor/<number>/<hybrid>``), checked against its revision, so a step interrupted
   and resumed skips what it already did (exactly once per object) and two concurrent
   ``dal migrate`` runs cannot both apply it. The step is recorded at ``m/steps/<number>``.
2. Per hybrid, unless its schema record (``dal.schema``) says it is up to date:
   a read-only survey (missing fields, values breaking a new unique constraint), removal of
   stale entries under the index and unique keys being built, then one compare-and-set
   commit per object that needs it: missing fields get their default, missing index and
   unique keys are written. Keys of properties no longer indexed or unique, and links of
   relations the model dropped, are deleted. Finally the record lists what is complete.

Every object write is checked against the document's revision and retried after a re-read
when a live writer got there first, so migrating beside running processes is safe as long
as they run the new model. Work already done is detected, never redone, so a killed run
can simply be started again.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dal import schema
from dal.backends.base import Check, CommitResult, Delete, DeletePrefix, Entry, Exists, Op, Put, Revision
from dal.exceptions import ConfigurationError
from dal.keys import encode_value
from dal.migrations import (
    Migration,
    MigrationError,
    OldLink,
    Operation,
    RenameRelation,
    Step,
    declared_migrations,
    migration,
)
from dal.results import changed_versions
from dal.schema import SchemaRecord, complete_record, stored_fields
from dal.transaction import Document, decode, encode, encode_canonical, same

if TYPE_CHECKING:
    from dal.config import Context
    from dal.dataobject import DataObject
    from dal.meta import HybridMeta

__all__ = ["Migration", "MigrationError", "Report", "Step", "Violation", "migrate", "migration"]

SCAN_BATCH = 500
#: commits tried on one object before giving up (each retry re-reads it)
ATTEMPTS = 50
#: links deleted per commit when a relation was dropped (etcd limits operations per transaction)
DELETE_BATCH = 50
#: test hook: exit the process (status 75) after this many object commits, as a kill would
EXIT_AFTER_ENV = "DAL_MIGRATE_EXIT_AFTER"


class Meter(Protocol):
    def advance(self, amount: int = 1) -> None: ...


#: ``progress(total, label)`` returns a context manager yielding a Meter (``dal.cli.progress.Progress``)
ProgressFactory = Callable[[int, str], AbstractContextManager[Meter]]


class _Quiet:
    def advance(self, amount: int = 1) -> None:
        pass


def _no_progress(total: int, label: str) -> AbstractContextManager[Meter]:
    return nullcontext(_Quiet())


@dataclass(frozen=True)
class Violation:
    """Objects sharing a value of a property that became unique: its keys stay unbuilt."""

    hybrid: str
    cls_name: str
    field: str
    value: Any
    guids: tuple[str, ...]

    def describe(self) -> str:
        shown = ", ".join(self.guids[:10]) + (f" and {len(self.guids) - 10} more" if len(self.guids) > 10
                                               else "")
        return f"{self.cls_name}.{self.field} = {self.value!r} is held by {len(self.guids)} objects: {shown}"


@dataclass
class Report:
    """What a run did (or, dry, would do)."""

    dry_run: bool
    lines: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    #: hybrid -> objects rewritten or given keys (dry: that would be)
    objects: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    #: durable commits made
    commits: int = 0
    up_to_date: bool = True

    @property
    def ok(self) -> bool:
        """Whether everything declared is (or would be) complete: no unique violations remain."""
        return not self.violations


@dataclass
class Survey:
    """What one hybrid needs, from its record, its key prefixes and (when needed) its documents."""

    meta: HybridMeta
    record: SchemaRecord | None
    build_indexed: tuple[str, ...]
    build_unique: tuple[str, ...]
    stale_indexed: tuple[str, ...]
    stale_unique: tuple[str, ...]
    #: relation the model no longer declares -> its link keys still stored
    dropped_links: dict[str, list[str]]
    fill: bool
    scanned: bool = False
    objects: int = 0
    missing: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    #: step number -> objects it changes (dry runs only)
    step_changes: Counter[int] = field(default_factory=Counter)

    @property
    def needs_scan(self) -> bool:
        return self.fill or bool(self.build_indexed or self.build_unique)

    @property
    def has_work(self) -> bool:
        return bool(self.missing or self.step_changes or self.stale_indexed or self.stale_unique
                    or self.dropped_links or self.violations
                    or (self.objects and (self.build_indexed or self.build_unique)))

    def buildable_unique(self) -> tuple[str, ...]:
        violated = {v.field for v in self.violations}
        return tuple(name for name in self.build_unique if name not in violated)


def migrate(context: Context, hybrids: Iterable[type[DataObject]] | None = None, *,
            migrations: Iterable[Migration] | None = None, dry_run: bool = False,
            emit: Callable[[str], None] | None = None, progress: ProgressFactory | None = None) -> Report:
    """Bring the stored data of ``hybrids`` (default: every registered one) up to their declared models.

    ``migrations`` defaults to every step declared with ``@migration``. With ``dry_run`` nothing
    is written and the report says what would be. ``emit`` receives the report's lines as they
    are made. Raise MigrationError when a step cannot complete.
    """
    from dal.meta import hybrids as registry

    metas = [cls._meta for cls in (registry.all() if hybrids is None else hybrids)]
    steps = declared_migrations() if migrations is None else sorted(migrations, key=lambda m: m.number)
    numbers = [m.number for m in steps]
    if len(set(numbers)) != len(numbers):
        raise ConfigurationError(f"migration step numbers must be unique: {numbers}")
    return Migrator(context, metas, steps, dry_run=dry_run, emit=emit,
                    progress=progress or _no_progress).run()


class Migrator:
    """One run of ``dal migrate``."""

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
        exit_after = os.environ.get(EXIT_AFTER_ENV)
        self._exit_after = int(exit_after) if exit_after else None

    def say(self, line: str) -> None:
        self.report.lines.append(line)
        if self._emit is not None:
            self._emit(line)

    def run(self) -> Report:
        if self.dry_run:
            self.say("dry run: nothing will be written")
        done = self._done_steps()
        pending = [(m, m.plan()) for m in self.migrations if m.number not in done]
        if pending:
            self.report.up_to_date = False
        for declared, step in pending:
            if self.dry_run:
                self.say(f"step {declared.number} ({declared.description}): would "
                         f"{'; '.join(op.describe() for op in step.operations) or 'do nothing'}")
            else:
                self._run_step(declared, step)
        for meta in self.metas:
            # a dry run sees each document as the pending steps would leave it
            simulated = [(step.number, step.operations_for(meta)) for _, step in pending] if self.dry_run \
                else []
            self._migrate_hybrid(meta, [(number, ops) for number, ops in simulated if ops])
        schema.forget(self.context)
        self._summary()
        return self.report

    def _summary(self) -> None:
        report = self.report
        if report.up_to_date:
            self.say("up to date: nothing to do")
            return
        verb = "would change" if self.dry_run else "changed"
        total = sum(report.objects.values())
        parts = [f"{len(report.steps)} step{'s' * (len(report.steps) != 1)} run"] if not self.dry_run else []
        parts.append(f"{total} object{'s' * (total != 1)} {verb}")
        if report.violations:
            parts.append(f"{len(report.violations)} unique violation{'s' * (len(report.violations) != 1)} "
                         "left unbuilt (see above); fix the data and run dal migrate again")
        self.say(("dry run: " if self.dry_run else "migrated: ") + ", ".join(parts))

    # --- steps ------------------------------------------------------------------------------

    def _done_steps(self) -> set[int]:
        prefix = self.keys.migration_steps()
        return {int(key[len(prefix):]) for key, _ in self._scan(prefix)}

    def _run_step(self, declared: Migration, step: Step) -> None:
        changed = 0
        for meta in step.hybrids():
            changed += self._run_step_on(step, meta)
        key = self.keys.migration_step(step.number)
        record = json.dumps({"number": step.number, "description": declared.description,
                             "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                            sort_keys=True).encode()
        result = self._commit([Revision(key, 0)],
                              [Put(key, record), DeletePrefix(self.keys.migration_cursors(step.number))])
        if not result:
            raise MigrationError(f"step {step.number} was recorded as done by another dal migrate run "
                                 "meanwhile; run only one dal migrate at a time")
        self.report.steps.append(step.number)
        self.say(f"step {step.number} ({declared.description}): {changed} object{'s' * (changed != 1)} "
                 "rewritten")

    def _run_step_on(self, step: Step, meta: HybridMeta) -> int:
        operations = step.operations_for(meta)
        cursor_key = self.keys.migration_cursor(step.number, meta.name)
        cursor = self.context.persistent.get(cursor_key)
        cursor_rev = cursor.revision if cursor is not None else 0
        start = cursor.value.decode() if cursor is not None else None
        record = schema.read_record(self.context, meta.name)
        ready = record.ready_for(meta) if record is not None else frozenset()
        prefix = self.keys.docs(meta.name)
        changed = 0
        with self.progress(self._count(prefix, start), f"step {step.number} {meta.name}") as meter:
            for doc_key, entry in self._scan(prefix, start):
                cursor_rev, wrote = self._step_object(step, operations, meta, ready, doc_key, entry,
                                                      cursor_key, cursor_rev)
                changed += wrote
                meter.advance()
        self.report.objects[meta.name] += changed
        return changed

    def _step_object(self, step: Step, operations: list[Operation], meta: HybridMeta, ready: frozenset[str],
                     doc_key: str, entry: Entry, cursor_key: str, cursor_rev: int) -> tuple[int, bool]:
        guid = doc_key.rsplit("/", 1)[1]
        current: Entry | None = entry
        for _ in range(ATTEMPTS):
            if current is None:
                return cursor_rev, False  # deleted meanwhile
            before = _decode(meta, guid, current.value)
            after, old_links = _apply(operations, before)
            if not old_links and encode_canonical(after) == encode_canonical(before):
                return cursor_rev, False
            _check_readable(step, meta, guid, before, after)
            checks: list[Check] = [Revision(doc_key, current.revision), Revision(cursor_key, cursor_rev)]
            ops: list[Op] = [Put(doc_key, encode(after))]
            ops += [Delete(self.keys.link(link.target, link.target_guid, meta.name, link.relation, guid))
                    for link in old_links]
            extra_checks, extra_ops = self._key_changes(meta, guid, before, after, ready)
            result = self._commit_result(checks + extra_checks,
                                         ops + extra_ops + [Put(cursor_key, doc_key.encode())])
            if result.ok:
                self._wrote(meta, guid, before, after)
                return result.revision, True
            if 1 in result.failed:
                raise MigrationError(
                    f"step {step.number}: another dal migrate is running this step; let it finish")
            if 0 not in result.failed:
                raise MigrationError(
                    f"step {step.number} cannot rewrite {meta.cls.__name__} {guid}: "
                    f"{self._explain(checks + extra_checks, result.failed)}; fix that object and run dal "
                    "migrate "
                    "again (steps resume where they stopped)")
            current = result.current.get(doc_key)
        raise MigrationError(f"step {step.number}: {meta.cls.__name__} {guid} kept changing; run dal migrate "
                             "again")

    def _key_changes(self, meta: HybridMeta, guid: str, before: Document, after: Document,
                     ready: frozenset[str]) -> tuple[list[Check], list[Op]]:
        """Keep the complete keys and the links right when a step changes a document."""
        keys = self.keys
        checks: list[Check] = []
        ops: list[Op] = []
        for prop in meta.indexed:
            old, new = before.get(prop.name), after.get(prop.name)
            if prop.name in ready and not same(old, new):
                ops += [Delete(keys.index(meta.name, prop.name, old, guid)),
                        Put(keys.index(meta.name, prop.name, new, guid), b"")]
        for prop in meta.unique:
            old, new = before.get(prop.name), after.get(prop.name)
            if prop.name not in ready or same(old, new):
                continue
            if old is not None:
                ops.append(Delete(keys.unique(meta.name, prop.name, old)))
            if new is not None:
                checks.append(Revision(keys.unique(meta.name, prop.name, new), 0))
                ops.append(Put(keys.unique(meta.name, prop.name, new), guid.encode()))
        for relation in meta.relations.values():
            old, new = before.get(relation.guid_field), after.get(relation.guid_field)
            if relation.target is None or same(old, new):
                continue
            target = relation.target._meta.name
            if old is not None:
                ops.append(Delete(keys.link(target, old, meta.name, relation.name, guid)))
            if new is not None:
                if new != guid:
                    checks.append(Exists(keys.doc(target, new)))
                ops.append(Put(keys.link(target, new, meta.name, relation.name, guid), b""))
        return checks, ops

    # --- hybrids ----------------------------------------------------------------------------

    def _migrate_hybrid(self, meta: HybridMeta, pending_ops: list[tuple[int, list[Operation]]]) -> None:
        survey = self._survey(meta, pending_ops)
        label = meta.cls.__name__
        if not survey.has_work:
            # bookkeeping only: no object lacks a field and there is no object to key (or only
            # types, defaults or flags changed, which need no data change)
            current = complete_record(meta)
            record = survey.record
            if not self.dry_run and (record is None or record.fingerprint != current.fingerprint
                                     or record.ready_for(meta) != current.ready_for(meta)):
                self._record(survey, built_indexed=survey.build_indexed, built_unique=survey.build_unique)
            return
        self.report.up_to_date = False
        self.say(f"{meta.name}: {self._plan_text(survey)}")
        for violation in survey.violations:
            self.say(f"  unique keys of {violation.cls_name}.{violation.field} not built: "
                     f"{violation.describe()}")
        self.report.violations += survey.violations
        if self.dry_run:
            self.report.objects[meta.name] += self._dry_count(survey)
            return
        distrusted_at = self._distrust_stale(survey)
        for name in survey.build_indexed:
            self._remove_stale_index(meta, name)
        buildable = survey.buildable_unique()
        for name in buildable:
            self._remove_stale_unique(meta, name)
        late: list[Violation] = []
        if survey.needs_scan:
            late = self._bring_up(survey, buildable)
        for violation in late:
            self.say(f"  unique keys of {label}.{violation.field} not complete: {violation.describe()} "
                     "(written meanwhile by a live process)")
        self.report.violations += late
        self._drop_stale_keys(survey, distrusted_at)
        self._drop_relations(survey)
        late_fields = {v.field for v in late}
        self._record(survey, built_indexed=survey.build_indexed,
                     built_unique=tuple(name for name in buildable if name not in late_fields))

    def _survey(self, meta: HybridMeta, pending_ops: list[tuple[int, list[Operation]]]) -> Survey:
        record = schema.read_record(self.context, meta.name)
        declared_indexed = [p.name for p in meta.indexed]
        declared_unique = [p.name for p in meta.unique]
        ready_indexed = record.indexed if record is not None else frozenset()
        ready_unique = record.unique if record is not None else frozenset()
        stale_indexed = [name for name in self._key_fields(self.keys.index_fields(meta.name))
                         if name not in declared_indexed]
        stale_unique = [name for name in self._key_fields(self.keys.unique_fields(meta.name))
                        if name not in declared_unique]
        renamed = {op.old for _, ops in pending_ops for op in ops if isinstance(op, RenameRelation)}
        dropped: dict[str, list[str]] = {}
        if record is not None:
            for name, spec in sorted(record.model.get("relations", {}).items()):
                target = spec.get("target") if isinstance(spec, dict) else None
                if name not in meta.relations and name not in renamed and isinstance(target, str):
                    prefix = f"{self.keys.root}l/{target}/"
                    links = [key for key, _ in self._scan(prefix)
                             if key[len(prefix):].split("/")[1:3] == [meta.name, name]]
                    if links:
                        dropped[name] = links
        fill = record is None or not meta.field_set <= stored_fields(record.model)
        survey = Survey(meta, record, tuple(n for n in declared_indexed if n not in ready_indexed),
                        tuple(n for n in declared_unique if n not in ready_unique), tuple(stale_indexed),
                        tuple(stale_unique), dropped, fill)
        if survey.needs_scan or pending_ops:
            self._scan_documents(survey, pending_ops)
            survey.scanned = True
        return survey

    def _scan_documents(self, survey: Survey, pending_ops: list[tuple[int, list[Operation]]]) -> None:
        meta = survey.meta
        holders: dict[str, dict[str, list[str]]] = {name: {} for name in survey.build_unique}
        values: dict[tuple[str, str], Any] = {}
        prefix = self.keys.docs(meta.name)
        for doc_key, entry in self._scan(prefix):
            guid = doc_key[len(prefix):]
            doc = _decode(meta, guid, entry.value)
            for number, operations in pending_ops:  # dry run: see the documents as the steps leave them
                after, old_links = _apply(operations, doc)
                if old_links or encode_canonical(after) != encode_canonical(doc):
                    survey.step_changes[number] += 1
                doc = after
            survey.objects += 1
            for name in meta.field_set - doc.keys():
                survey.missing[name] += 1
            for name in survey.build_unique:
                value = _value(meta, doc, name)
                if value is not None:
                    encoded = encode_value(value)
                    values.setdefault((name, encoded), value)
                    holders[name].setdefault(encoded, []).append(guid)
        for name, by_value in holders.items():
            for encoded, guids in sorted(by_value.items()):
                if len(guids) > 1:
                    survey.violations.append(Violation(meta.name, meta.cls.__name__, name,
                                                       values[name, encoded], tuple(guids)))

    def _plan_text(self, survey: Survey) -> str:
        would = "would " if self.dry_run else ""
        parts = [f"{survey.objects} object{'s' * (survey.objects != 1)}"] if survey.scanned else []
        for number, count in sorted(survey.step_changes.items()):
            parts.append(f"step {number} {would}change{'s' * (not would)} {count}")
        if survey.missing:
            parts.append(f"{would}fill defaults for " + ", ".join(
                f"{name} ({count})" for name, count in sorted(survey.missing.items())))
        if survey.build_indexed:
            parts.append(f"{would}build index keys of {', '.join(survey.build_indexed)}")
        if survey.build_unique:
            parts.append(f"{would}build unique keys of {', '.join(survey.build_unique)}")
        if survey.stale_indexed:
            parts.append(f"{would}remove index keys of {', '.join(survey.stale_indexed)} (no longer indexed)")
        if survey.stale_unique:
            parts.append(f"{would}remove unique keys of {', '.join(survey.stale_unique)} (no longer unique)")
        for relation, links in sorted(survey.dropped_links.items()):
            parts.append(f"{would}remove {len(links)} link{'s' * (len(links) != 1)} of dropped relation "
                         f"{relation}")
        return "; ".join(parts)

    def _dry_count(self, survey: Survey) -> int:
        """Objects a real run would write: all scanned ones when keys are built, else those missing fields."""
        if survey.build_indexed or survey.buildable_unique():
            return survey.objects
        return max([*survey.missing.values(), *survey.step_changes.values(), 0])

    # --- building keys ------------------------------------------------------------------------

    def _bring_up(self, survey: Survey, buildable_unique: tuple[str, ...]) -> list[Violation]:
        """Fill missing fields and write missing keys, one compare-and-set commit per object."""
        meta = survey.meta
        prefix = self.keys.docs(meta.name)
        late: dict[tuple[str, str], set[str]] = {}
        late_values: dict[tuple[str, str], Any] = {}
        written = 0
        with self.progress(survey.objects, f"migrate {meta.name}") as meter:
            for batch in self._batches(prefix):
                wanted = []
                for doc_key, entry in batch:
                    guid = doc_key[len(prefix):]
                    doc = _filled(meta, _decode(meta, guid, entry.value))
                    wanted += self._wanted_keys(meta, guid, doc, survey.build_indexed, buildable_unique)
                present = self.context.persistent.get_many(wanted) if wanted else {}
                for doc_key, entry in batch:
                    written += self._bring_up_object(meta, doc_key, entry, present, survey.build_indexed,
                                                     buildable_unique, late, late_values)
                    meter.advance()
        self.report.objects[meta.name] += written
        return [Violation(meta.name, meta.cls.__name__, name, late_values[name, encoded],
                          tuple(sorted(guids))) for (name, encoded), guids in sorted(late.items())]

    def _wanted_keys(self, meta: HybridMeta, guid: str, doc: Document, indexed: tuple[str, ...],
                     unique: tuple[str, ...]) -> list[str]:
        wanted = [self.keys.index(meta.name, name, doc.get(name), guid) for name in indexed]
        wanted += [self.keys.unique(meta.name, name, doc[name]) for name in unique
                   if doc.get(name) is not None]
        return wanted

    def _bring_up_object(self, meta: HybridMeta, doc_key: str, entry: Entry, present: dict[str, Entry],
                         indexed: tuple[str, ...], unique: tuple[str, ...],
                         late: dict[tuple[str, str], set[str]],
                         late_values: dict[tuple[str, str], Any]) -> int:
        guid = doc_key.rsplit("/", 1)[1]
        current: Entry | None = entry
        for attempt in range(ATTEMPTS):
            if current is None:
                return 0  # deleted meanwhile: its delete removed its keys
            stored = _decode(meta, guid, current.value)
            doc = _filled(meta, stored)
            if attempt:  # the probe was made before a live writer changed the object
                wanted = self._wanted_keys(meta, guid, doc, indexed, unique)
                present = self.context.persistent.get_many(wanted)
            checks: list[Check] = [Revision(doc_key, current.revision)]
            ops: list[Op] = [] if doc.keys() == stored.keys() else [Put(doc_key, encode(doc))]
            for name in indexed:
                key = self.keys.index(meta.name, name, doc.get(name), guid)
                if key not in present:
                    ops.append(Put(key, b""))
            for name in unique:
                if doc.get(name) is None:
                    continue
                key = self.keys.unique(meta.name, name, doc[name])
                owner = present.get(key)
                if owner is None:
                    checks.append(Revision(key, 0))
                    ops.append(Put(key, guid.encode()))
                elif owner.value.decode() != guid:
                    encoded = encode_value(doc[name])
                    late.setdefault((name, encoded), set()).update({guid, owner.value.decode()})
                    late_values[name, encoded] = doc[name]
            if not ops:
                return 0
            result = self._commit_result(checks, ops)
            if result.ok:
                if doc.keys() != stored.keys():
                    self._wrote(meta, guid, stored, doc)
                return 1
            current = result.current.get(doc_key) if 0 in result.failed else current
        raise MigrationError(f"{meta.cls.__name__} {guid} kept changing while being migrated; "
                             "run dal migrate again")

    def _remove_stale_index(self, meta: HybridMeta, name: str) -> None:
        """Delete index entries of ``name`` that no longer match their object (left by an older model)."""
        prefix = f"{self.keys.index_fields(meta.name)}{name}/"
        for batch in self._batches(prefix):
            parsed = [(key, *key[len(prefix):].split("/", 1)) for key, _ in batch]
            docs = self.context.persistent.get_many([self.keys.doc(meta.name, guid) for _, _, guid in parsed])
            for key, encoded, guid in parsed:
                doc_key = self.keys.doc(meta.name, guid)
                current = docs.get(doc_key)
                for _ in range(ATTEMPTS):
                    if current is not None and encode_value(
                            _value(meta, _decode(meta, guid, current.value), name)) == encoded:
                        break
                    checks: list[Check] = [Revision(doc_key, current.revision if current else 0)]
                    if self._commit(checks, [Delete(key)]):
                        break
                    current = self.context.persistent.get(doc_key)

    def _remove_stale_unique(self, meta: HybridMeta, name: str) -> None:
        """Delete unique keys of ``name`` whose owner no longer holds that value."""
        prefix = f"{self.keys.unique_fields(meta.name)}{name}/"
        for batch in self._batches(prefix):
            owners = {key: entry.value.decode() for key, entry in batch}
            docs = self.context.persistent.get_many([self.keys.doc(meta.name, g) for g in owners.values()])
            for key, entry in batch:
                current_key: Entry | None = entry
                current = docs.get(self.keys.doc(meta.name, owners[key]))
                for _ in range(ATTEMPTS):
                    if current_key is None:
                        break
                    owner = current_key.value.decode()
                    doc_key = self.keys.doc(meta.name, owner)
                    if current is not None and encode_value(
                            _value(meta, _decode(meta, owner, current.value), name)) == key[len(prefix):]:
                        break
                    if self._commit([Revision(key, current_key.revision),
                                     Revision(doc_key, current.revision if current else 0)], [Delete(key)]):
                        break
                    current_key = self.context.persistent.get(key)
                    current = self.context.persistent.get(doc_key)

    def _distrust_stale(self, survey: Survey) -> float:
        """Remove from the record the fields whose keys are about to go; return when it was done."""
        if not (survey.stale_indexed or survey.stale_unique):
            return float("-inf")
        stale_indexed, stale_unique = set(survey.stale_indexed), set(survey.stale_unique)
        record = survey.record
        for _ in range(ATTEMPTS):
            if record is None or not (record.indexed & stale_indexed or record.unique & stale_unique):
                return float("-inf")
            stored, written = schema.write_record(self.context, record.replace(
                indexed=record.indexed - stale_indexed, unique=record.unique - stale_unique))
            self._count_commit()
            if written:
                return time.monotonic()
            record = stored  # a save of the new model may have dropped them first
        raise MigrationError(f"the schema record of {survey.meta.cls.__name__} kept changing; "
                             "run dal migrate again")

    def _drop_stale_keys(self, survey: Survey, distrusted_at: float) -> None:
        """Delete every key of properties no longer indexed or unique, once no process trusts them."""
        # a process running the old model trusts what it read for up to READY_TTL
        time.sleep(max(0.0, distrusted_at + schema.READY_TTL * 1.25 - time.monotonic()))
        prefixes = [f"{self.keys.index_fields(survey.meta.name)}{name}/" for name in survey.stale_indexed]
        prefixes += [f"{self.keys.unique_fields(survey.meta.name)}{name}/" for name in survey.stale_unique]
        for prefix in prefixes:
            self._commit([], [DeletePrefix(prefix)])

    def _drop_relations(self, survey: Survey) -> None:
        """Delete the link keys of relations the model no longer declares (they would block deletes)."""
        for _, doomed in sorted(survey.dropped_links.items()):
            for start in range(0, len(doomed), DELETE_BATCH):
                self._commit([], [Delete(key) for key in doomed[start:start + DELETE_BATCH]])

    def _record(self, survey: Survey, built_indexed: tuple[str, ...], built_unique: tuple[str, ...]) -> None:
        """Record the model the documents now match and which keys are complete."""
        meta = survey.meta
        record = schema.read_record(self.context, meta.name)
        target = complete_record(meta)
        for _ in range(ATTEMPTS):
            base_indexed = record.indexed if record is not None else frozenset()
            base_unique = record.unique if record is not None else frozenset()
            indexed = (base_indexed & target.indexed) | set(built_indexed)
            unique = (base_unique & target.unique) | set(built_unique)
            revision = record.revision if record is not None else 0
            new = SchemaRecord(meta.name, target.model, target.fingerprint, frozenset(indexed),
                               frozenset(unique), revision)
            stored, written = schema.write_record(self.context, new)
            self._count_commit()
            if written:
                return
            record = stored
        raise MigrationError(f"the schema record of {meta.cls.__name__} kept changing; run dal migrate again")

    # --- store access -------------------------------------------------------------------------

    def _commit(self, checks: list[Check], ops: list[Op]) -> bool:
        return self._commit_result(checks, ops).ok

    def _commit_result(self, checks: list[Check], ops: list[Op]) -> CommitResult:
        result = self.context.commit(checks, ops)
        self._count_commit()
        return result

    def _count_commit(self) -> None:
        self.report.commits += 1
        if self._exit_after is not None and self.report.commits >= self._exit_after:
            os._exit(75)  # the test hook: die like a killed process, without cleanup

    def _wrote(self, meta: HybridMeta, guid: str, before: Document, after: Document) -> None:
        """Drop what caches hold about a rewritten object, as a save does."""
        keys = self.keys
        self.context.invalidate(keys.cached_doc(meta.name, guid),
                                *(keys.cached_dynamic(meta.name, guid, name) for name in meta.dynamics),
                                *changed_versions(keys, meta, guid, before, after))

    def _explain(self, checks: list[Check], failed: tuple[int, ...]) -> str:
        reasons = []
        for index in failed:
            check = checks[index]
            if isinstance(check, Exists):
                target, guid = check.key.rsplit("/", 2)[-2:]
                reasons.append(f"it would link to {target} {guid}, which is not stored")
            elif isinstance(check, Revision) and check.key.startswith(f"{self.keys.root}u/"):
                field_name, encoded = check.key.rsplit("/", 2)[-2:]
                reasons.append(f"another object already holds the unique {field_name} {encoded}")
        return "; ".join(reasons) or "a check failed"

    def _scan(self, prefix: str, start: str | None = None) -> Iterator[tuple[str, Entry]]:
        for batch in self._batches(prefix, start):
            yield from batch

    def _batches(self, prefix: str, start: str | None = None) -> Iterator[list[tuple[str, Entry]]]:
        while True:
            batch = self.context.persistent.scan(prefix, start_after=start, limit=SCAN_BATCH)
            if batch:
                yield batch
            if len(batch) < SCAN_BATCH:
                return
            start = batch[-1][0]

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


def _check_readable(step: Step, meta: HybridMeta, guid: str, before: Document, after: Document) -> None:
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
                f"step {step.number} would store {meta.cls.__name__}.{name} = {value!r} in {guid}, which the "
                f"declared model cannot read ({exc}); fix the step and run dal migrate again") from exc


def _apply(operations: list[Operation], doc: Document) -> tuple[Document, list[OldLink]]:
    after = json.loads(encode_canonical(doc))
    old_links: list[OldLink] = []
    for operation in operations:
        old_links += operation.apply(after)
    return after, old_links


def _default(meta: HybridMeta, name: str) -> Any:
    prop = meta.properties.get(name)
    return None if prop is None else prop.validator.to_json(prop.make_default())


def _value(meta: HybridMeta, doc: Document, name: str) -> Any:
    """Return the stored value of ``name``, or the default a migrated document will hold."""
    return doc[name] if name in doc else _default(meta, name)


def _filled(meta: HybridMeta, doc: Document) -> Document:
    missing = meta.field_set - doc.keys()
    if not missing:
        return doc
    return {**doc, **{name: _default(meta, name) for name in sorted(missing)}}


def _decode(meta: HybridMeta, guid: str, raw: bytes) -> Document:
    try:
        return decode(raw)
    except ValueError as exc:
        raise MigrationError(
            f"the stored document of {meta.cls.__name__} {guid} is not a JSON object ({exc}); "
            "run dal check, repair or delete it, and run dal migrate again") from exc


