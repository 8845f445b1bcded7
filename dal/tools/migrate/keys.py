"""The per-hybrid pass of ``dal migrate``: survey, defaults, index and unique keys, stale keys.

For each hybrid whose schema record is not up to date: a read-only survey, then removal of
stale entries under the keys being built, one compare-and-set commit per object needing
defaults or keys, deletion of keys and links the model no longer declares, and the record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dal.backends.base import Check, Delete, DeletePrefix, Entry, Op, Put, Revision
from dal.keys import encode_value
from dal.model.meta import family
from dal.objects import schema
from dal.objects.schema import SchemaRecord, complete_record, stored_fields
from dal.objects.transaction import Document, encode, encode_canonical
from dal.tools.migrate.migrations import MigrationError, Operation, RenameRelation
from dal.tools.migrate.report import Violation
from dal.tools.migrate.run import ATTEMPTS, MigrationRun, apply_operations, decode_doc

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

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
    #: one-to-one relations whose keys are to be built, and those whose keys go (no longer one-to-one)
    build_onetoone: tuple[str, ...] = ()
    stale_onetoone: tuple[str, ...] = ()
    #: relation -> targets several objects point at: none of those objects gets a key
    offenders: dict[str, set[str]] = field(default_factory=dict)

    @property
    def needs_scan(self) -> bool:
        return self.fill or bool(self.build_indexed or self.build_unique or self.build_onetoone)

    @property
    def has_work(self) -> bool:
        return bool(self.missing or self.step_changes or self.stale_indexed or self.stale_unique
                    or self.stale_onetoone or self.dropped_links or self.violations
                    or (self.objects and (self.build_indexed or self.build_unique or self.build_onetoone)))

    def buildable_unique(self) -> tuple[str, ...]:
        violated = {v.field for v in self.violations if v.kind == "unique"}
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
                                     or record.ready_for(meta) != current.ready_for(meta)
                                     or record.onetoone_ready_for(meta) != current.onetoone_ready_for(meta)):
                self._record(survey, built_indexed=survey.build_indexed, built_unique=survey.build_unique,
                             built_onetoone=survey.build_onetoone)
            return
        self.report.up_to_date = False
        self.say(f"{meta.name}: {self._plan_text(survey)}")
        for violation in survey.violations:
            if violation.kind == "onetoone":
                self.say(f"  no one-to-one key written for them: {violation.describe()}; unlink all but one")
            else:
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
        for name in survey.build_onetoone:
            self._remove_stale_onetoone(meta, name)
        late: list[Violation] = []
        if survey.needs_scan:
            late = self._bring_up(survey, buildable)
        for violation in late:
            if violation.kind == "onetoone":
                self.say(f"  no one-to-one key written for them: {violation.describe()} (one of them written "
                         "meanwhile by a live process, or by a subclass hybrid holding the relation too)")
            else:
                self.say(f"  unique keys of {label}.{violation.field} not complete: {violation.describe()} "
                         "(written meanwhile by a live process)")
        self.report.violations += late
        self._drop_stale_keys(survey, distrusted_at)
        self._drop_relations(survey)
        late_fields = {v.field for v in late}
        violated = late_fields | {v.field for v in survey.violations}
        self._record(survey, built_indexed=survey.build_indexed,
                     built_unique=tuple(name for name in buildable if name not in late_fields),
                     built_onetoone=tuple(name for name in survey.build_onetoone if name not in violated))

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
        declared_onetoone = schema.onetoone_relations(meta)
        ready_onetoone = record.onetoone if record is not None else frozenset()
        stale_onetoone = [name for name in self._key_fields(self.keys.onetoones(meta.name))
                          if name not in declared_onetoone]
        survey = Survey(meta, record, tuple(n for n in declared_indexed if n not in ready_indexed),
                        tuple(n for n in declared_unique if n not in ready_unique), tuple(stale_indexed),
                        tuple(stale_unique), dropped, fill,
                        build_onetoone=tuple(n for n in declared_onetoone if n not in ready_onetoone),
                        stale_onetoone=tuple(stale_onetoone))
        if survey.needs_scan or pending_ops:
            self._scan_documents(survey, pending_ops)
            survey.scanned = True
        return survey

    def _scan_documents(self, survey: Survey, pending_ops: list[tuple[int, list[Operation]]]) -> None:
        meta = survey.meta
        holders: dict[str, dict[str, list[str]]] = {name: {} for name in survey.build_unique}
        pointing: dict[str, dict[str, list[str]]] = {name: {} for name in survey.build_onetoone}
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
            for name in survey.build_onetoone:
                target = doc.get(meta.relations[name].guid_field)
                if isinstance(target, str):
                    pointing[name].setdefault(target, []).append(guid)
        for name, by_value in holders.items():
            for encoded, guids in sorted(by_value.items()):
                if len(guids) > 1:
                    survey.violations.append(Violation(meta.name, meta.cls.__name__, name,
                                                       values[name, encoded], tuple(guids)))
        for name, by_target in pointing.items():
            survey.offenders[name] = set()
            for target, guids in sorted(by_target.items()):
                if len(guids) > 1:
                    survey.offenders[name].add(target)
                    survey.violations.append(_onetoone_violation(meta, name, target, guids))

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
        if survey.build_onetoone:
            parts.append(f"{would}build one-to-one keys of {', '.join(survey.build_onetoone)}")
        if survey.stale_indexed:
            parts.append(f"{would}remove index keys of {', '.join(survey.stale_indexed)} (no longer indexed)")
        if survey.stale_unique:
            parts.append(f"{would}remove unique keys of {', '.join(survey.stale_unique)} (no longer unique)")
        if survey.stale_onetoone:
            parts.append(f"{would}remove one-to-one keys of {', '.join(survey.stale_onetoone)} (no longer "
                         "one-to-one)")
        for relation, links in sorted(survey.dropped_links.items()):
            parts.append(f"{would}remove {len(links)} link{'s' * (len(links) != 1)} of dropped relation "
                         f"{relation}")
        return "; ".join(parts)

    def _dry_count(self, survey: Survey) -> int:
        """Objects a real run would write: all scanned ones when keys are built, else those missing fields."""
        if survey.build_indexed or survey.buildable_unique() or survey.build_onetoone:
            return survey.objects
        return max([*survey.missing.values(), *survey.step_changes.values(), 0])

    # --- building keys ------------------------------------------------------------------------

    def _bring_up(self, survey: Survey, buildable_unique: tuple[str, ...]) -> list[Violation]:
        """Fill missing fields and write missing keys, one compare-and-set commit per object."""
        meta = survey.meta
        prefix = self.keys.docs(meta.name)
        late: dict[tuple[str, str], set[str]] = {}
        late_values: dict[tuple[str, str], Any] = {}
        #: (relation, target) -> objects found pointing there (holding its key, or being keyed now)
        late_targets: dict[tuple[str, str], set[str]] = {}
        onetoone = {name: survey.offenders.get(name, set()) for name in survey.build_onetoone}
        written = 0
        with self.progress(survey.objects, f"migrate {meta.name}") as meter:
            for batch in self._batches(prefix):
                wanted = []
                for doc_key, entry in batch:
                    guid = doc_key[len(prefix):]
                    doc = _filled(meta, decode_doc(meta, guid, entry.value))
                    wanted += self._wanted_keys(meta, guid, doc, survey.build_indexed, buildable_unique,
                                                onetoone)
                present = self.context.persistent.get_many(wanted) if wanted else {}
                for doc_key, entry in batch:
                    written += self._bring_up_object(meta, doc_key, entry, present, survey.build_indexed,
                                                     buildable_unique, late, late_values, onetoone,
                                                     late_targets)
                    meter.advance()
        self.report.objects[meta.name] += written
        return [Violation(meta.name, meta.cls.__name__, name, late_values[name, encoded],
                          tuple(sorted(guids))) for (name, encoded), guids in sorted(late.items())] + \
            [_onetoone_violation(meta, name, target, sorted(guids))
             for (name, target), guids in sorted(late_targets.items())]

    def _wanted_keys(self, meta: HybridMeta, guid: str, doc: Document, indexed: tuple[str, ...],
                     unique: tuple[str, ...], onetoone: dict[str, set[str]] | None = None) -> list[str]:
        wanted = [self.keys.index(meta.name, name, doc.get(name), guid) for name in indexed]
        wanted += [self.keys.unique(meta.name, name, doc[name]) for name in unique
                   if doc.get(name) is not None]
        wanted += [key for _, _, key, family_keys in self._onetoone_keys(meta, doc, onetoone or {})
                   for key in (key, *family_keys)]
        return wanted

    def _onetoone_keys(self, meta: HybridMeta, doc: Document,
                       onetoone: dict[str, set[str]]) -> list[tuple[str, str, str, list[str]]]:
        """Return (relation, target, key, the keys of the subclass hybrids holding it too) per key to build.

        Objects pointing at a target several objects point at (``onetoone[relation]``) get none.
        """
        found = []
        for name, offenders in onetoone.items():
            relation = meta.relations[name]
            target = doc.get(relation.guid_field)
            if not isinstance(target, str) or target in offenders:
                continue
            others = [self.keys.onetoone(member.owner._meta.name, member.name, target)
                      for member in family(relation) if member is not relation and member.owner is not None]
            found.append((name, target, self.keys.onetoone(meta.name, name, target), others))
        return found

    def _bring_up_object(self, meta: HybridMeta, doc_key: str, entry: Entry, present: dict[str, Entry],
                         indexed: tuple[str, ...], unique: tuple[str, ...],
                         late: dict[tuple[str, str], set[str]],
                         late_values: dict[tuple[str, str], Any],
                         onetoone: dict[str, set[str]] | None = None,
                         late_targets: dict[tuple[str, str], set[str]] | None = None) -> int:
        guid = doc_key.rsplit("/", 1)[1]
        current: Entry | None = entry
        for attempt in range(ATTEMPTS):
            if current is None:
                return 0  # deleted meanwhile: its delete removed its keys
            stored = decode_doc(meta, guid, current.value)
            doc = _filled(meta, stored)
            if attempt:  # the probe was made before a live writer changed the object
                wanted = self._wanted_keys(meta, guid, doc, indexed, unique, onetoone)
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
            for name, target, key, others in self._onetoone_keys(meta, doc, onetoone or {}):
                holders = {present[other].value.decode(errors="replace") for other in (key, *others)
                           if other in present}
                if holders - {guid}:  # another object holds the target: neither gets a key from here
                    assert late_targets is not None
                    late_targets.setdefault((name, target), set()).update(holders | {guid})
                elif key not in present:
                    checks += [Revision(other, 0) for other in (key, *others)]
                    ops.append(Put(key, guid.encode()))
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
        self._remove_stale_keys(meta, f"{self.keys.unique_fields(meta.name)}{name}/",
                                lambda doc, rest: encode_value(_value(meta, doc, name)) == rest)

    def _remove_stale_onetoone(self, meta: HybridMeta, name: str) -> None:
        """Delete one-to-one keys of ``name`` whose owner no longer points at their target."""
        guid_field = meta.relations[name].guid_field
        self._remove_stale_keys(meta, self.keys.onetoones(meta.name, name),
                                lambda doc, rest: doc.get(guid_field) == rest)

    def _remove_stale_keys(self, meta: HybridMeta, prefix: str,
                           holds: Callable[[Document, str], bool]) -> None:
        """Delete the keys under ``prefix`` (each naming its owner's guid) whose owner no longer
        ``holds`` them, given its document and the key's text after ``prefix``; conditionally on
        both revisions, re-reading both when a writer got there first."""
        for batch in self._batches(prefix):
            owners = {key: entry.value.decode(errors="replace") for key, entry in batch}
            docs = self.context.persistent.get_many([self.keys.doc(meta.name, g) for g in owners.values()])
            for key, entry in batch:
                current_key: Entry | None = entry
                current = docs.get(self.keys.doc(meta.name, owners[key]))
                for _ in range(ATTEMPTS):
                    if current_key is None:
                        break
                    owner = current_key.value.decode(errors="replace")
                    doc_key = self.keys.doc(meta.name, owner)
                    if current is not None and holds(decode_doc(meta, owner, current.value),
                                                     key[len(prefix):]):
                        break
                    if self._commit([Revision(key, current_key.revision),
                                     Revision(doc_key, current.revision if current else 0)], [Delete(key)]):
                        break
                    current_key = self.context.persistent.get(key)
                    current = None if current_key is None else self.context.persistent.get(
                        self.keys.doc(meta.name, current_key.value.decode(errors="replace")))

    def _distrust_stale(self, survey: Survey) -> float:
        """Remove from the record the fields whose keys are about to go; return when it was done."""
        if not (survey.stale_indexed or survey.stale_unique or survey.stale_onetoone):
            return float("-inf")
        stale_indexed, stale_unique = set(survey.stale_indexed), set(survey.stale_unique)
        stale_onetoone = set(survey.stale_onetoone)
        record = survey.record
        for _ in range(ATTEMPTS):
            if record is None or not (record.indexed & stale_indexed or record.unique & stale_unique
                                      or record.onetoone & stale_onetoone):
                return float("-inf")
            stored, written = schema.write_record(self.context, record.replace(
                indexed=record.indexed - stale_indexed, unique=record.unique - stale_unique,
                onetoone=record.onetoone - stale_onetoone))
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
        prefixes += [self.keys.onetoones(survey.meta.name, name) for name in survey.stale_onetoone]
        for prefix in prefixes:
            self._commit([], [DeletePrefix(prefix)])

    def _drop_relations(self, survey: Survey) -> None:
        """Delete the link keys of relations the model no longer declares (they would block deletes)."""
        for _, doomed in sorted(survey.dropped_links.items()):
            for start in range(0, len(doomed), DELETE_BATCH):
                self._commit([], [Delete(key) for key in doomed[start:start + DELETE_BATCH]])

    def _record(self, survey: Survey, built_indexed: tuple[str, ...], built_unique: tuple[str, ...],
                built_onetoone: tuple[str, ...] = ()) -> None:
        """Record the model the documents now match and which keys are complete."""
        meta = survey.meta
        record = schema.read_record(self.context, meta.name)
        target = complete_record(meta)
        for _ in range(ATTEMPTS):
            base_indexed = record.indexed if record is not None else frozenset()
            base_unique = record.unique if record is not None else frozenset()
            base_onetoone = record.onetoone if record is not None else frozenset()
            indexed = (base_indexed & target.indexed) | set(built_indexed)
            unique = (base_unique & target.unique) | set(built_unique)
            onetoone = (base_onetoone & target.onetoone) | set(built_onetoone)
            revision = record.revision if record is not None else 0
            new = SchemaRecord(meta.name, target.model, target.fingerprint, frozenset(indexed),
                               frozenset(unique), revision, frozenset(onetoone))
            stored, written = schema.write_record(self.context, new)
            self._count_commit()
            if written:
                return
            record = stored
        raise MigrationError(f"the schema record of {meta.cls.__name__} kept changing; run dal migrate again")


def _onetoone_violation(meta: HybridMeta, name: str, target: str, guids: list[str]) -> Violation:
    relation = meta.relations[name]
    kind = relation.target.__name__ if relation.target is not None else str(relation.foreign_type)
    return Violation(meta.name, meta.cls.__name__, name, target, tuple(guids), kind="onetoone", target=kind)


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
