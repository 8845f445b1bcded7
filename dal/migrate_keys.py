"""The per-hybrid pass of ``dal migrate``: survey, defaults, index and unique keys, stale keys.

For each hybrid whose schema record is not up to date: a read-only survey, then removal of
stale entries under the keys being built, one compare-and-set commit per object needing
defaults or keys, deletion of keys and links the model no longer declares, and the record.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dal import schema
from dal.backends.base import Check, Delete, DeletePrefix, Entry, Op, Put, Revision
from dal.keys import encode_value
from dal.migrate_report import Violation
from dal.migrate_run import ATTEMPTS, MigrationRun, apply_operations, decode_doc
from dal.migrations import MigrationError, Operation, RenameRelation
from dal.schema import SchemaRecord, complete_record, stored_fields
from dal.transaction import Document, encode, encode_canonical

if TYPE_CHECKING:
    from dal.meta import HybridMeta

#: links deleted per commit when a relation was dropped (etcd limits operations per transaction)
DELETE_BATCH = 50


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


class HybridMigrator(MigrationRun):
    """The per-hybrid pass of a run, after the steps."""

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
            doc = decode_doc(meta, guid, entry.value)
            for number, operations in pending_ops:  # dry run: see the documents as the steps leave them
                after, old_links = apply_operations(operations, doc)
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
                    doc = _filled(meta, decode_doc(meta, guid, entry.value))
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
            stored = decode_doc(meta, guid, current.value)
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
            rewritten = doc.keys() != stored.keys()
            result = self._commit_result(
                checks, ops, self._invalidation(meta, guid, stored, doc) if rewritten else ())
            if result.ok:
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
                            _value(meta, decode_doc(meta, guid, current.value), name)) == encoded:
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
                            _value(meta, decode_doc(meta, owner, current.value), name)) == key[len(prefix):]:
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
