"""What one hybrid needs from ``dal migrate``: the read-only survey of its record, keys and documents."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dal.keys import encode_value
from dal.objects import schema
from dal.objects.schema import SchemaRecord, stored_fields
from dal.objects.transaction import Document
from dal.tools.migrate.migrations import Operation, RenameRelation
from dal.tools.migrate.report import Violation
from dal.tools.migrate.run import MigrationRun, decode_doc, step_document

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta


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


class Surveyor(MigrationRun):
    """The survey of a hybrid, and how a run says what it plans."""

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
                after, _ = step_document(number, operations, meta, guid, doc)
                if after is not None:
                    survey.step_changes[number] += 1
                    doc = after
            survey.objects += 1
            for name in meta.field_set - doc.keys():
                survey.missing[name] += 1
            for name in survey.build_unique:
                value = value_of(meta, doc, name)
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
                    survey.violations.append(onetoone_violation(meta, name, target, guids))

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


def onetoone_violation(meta: HybridMeta, name: str, target: str, guids: list[str]) -> Violation:
    """Return the violation of several objects (``guids``) pointing at one target of one-to-one ``name``."""
    relation = meta.relations[name]
    kind = relation.target.__name__ if relation.target is not None else str(relation.foreign_type)
    return Violation(meta.name, meta.cls.__name__, name, target, tuple(guids), kind="onetoone", target=kind)


def default_value(meta: HybridMeta, name: str) -> Any:
    prop = meta.properties.get(name)
    return None if prop is None else prop.validator.to_json(prop.make_default())


def value_of(meta: HybridMeta, doc: Document, name: str) -> Any:
    """Return the stored value of ``name``, or the default a migrated document will hold."""
    return doc[name] if name in doc else default_value(meta, name)


def filled(meta: HybridMeta, doc: Document) -> Document:
    """Return ``doc`` with every declared field it lacks set to its default."""
    missing = meta.field_set - doc.keys()
    if not missing:
        return doc
    return {**doc, **{name: default_value(meta, name) for name in sorted(missing)}}
