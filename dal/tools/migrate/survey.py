"""What one hybrid needs from ``dal migrate``: the read-only survey of its record, keys and documents."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dal.backends.base import Entry
from dal.keys import encode_value
from dal.model.registry import family
from dal.objects import schema
from dal.objects.schema import SchemaRecord, stored_fields
from dal.objects.transaction import Document
from dal.tools.migrate.links import LinkRebuilder, dangling_violations
from dal.tools.migrate.migrations import Operation, RenameRelation
from dal.tools.migrate.report import Violation, valueless_fields, valueless_violations
from dal.tools.migrate.run import decode_doc, step_document

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
    #: (dry runs) objects the run would write whatever is violated; and per object that would only
    #: get unique or one-to-one keys, the unique fields and (relation, target) pairs it lacks keys of
    would_write: int = 0
    keys_only: list[tuple[frozenset[str], frozenset[tuple[str, str]]]] = field(default_factory=list)
    #: fields another run marked for checking against what older processes saved meanwhile (a run
    #: that stopped before it checked them, or one running now)
    unverified: tuple[str, ...] = ()
    #: fields to build that have keys stored though the hybrid has no document (left by objects deleted
    #: by a model not maintaining them): removed before the keys are marked ready
    leftover: tuple[str, ...] = ()
    #: relations the record's model does not list (see :mod:`dal.tools.migrate.links`), and per relation
    #: the links missing whose target is stored
    relink: tuple[str, ...] = ()
    unlinked: Counter[str] = field(default_factory=Counter)

    @property
    def needs_scan(self) -> bool:
        return self.fill or bool(self.build_indexed or self.build_unique or self.build_onetoone)

    @property
    def has_work(self) -> bool:
        return bool(self.missing or self.step_changes or self.stale_indexed or self.stale_unique
                    or self.stale_onetoone or self.dropped_links or self.violations or self.unverified
                    or self.leftover or self.unlinked
                    or (self.objects and (self.build_indexed or self.build_unique or self.build_onetoone)))

    def buildable_unique(self) -> tuple[str, ...]:
        violated = {v.field for v in self.violations if v.kind == "unique"}
        return tuple(name for name in self.build_unique if name not in violated)


class Surveyor(LinkRebuilder):
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
        dropped = self._dropped_by_record(meta, record, renamed)
        fill = record is None or not meta.field_set <= stored_fields(record.model)
        declared_onetoone = schema.onetoone_relations(meta)
        ready_onetoone = record.onetoone if record is not None else frozenset()
        stale_onetoone = [name for name in self._key_fields(self.keys.onetoones(meta.name))
                          if name not in declared_onetoone]
        survey = Survey(meta, record, tuple(n for n in declared_indexed if n not in ready_indexed),
                        tuple(n for n in declared_unique if n not in ready_unique), tuple(stale_indexed),
                        tuple(stale_unique), dropped, fill,
                        build_onetoone=tuple(n for n in declared_onetoone if n not in ready_onetoone),
                        stale_onetoone=tuple(stale_onetoone),
                        unverified=self._unverified(meta))
        if record is None:  # no record listed its relations: look among every stored link
            self._find_dropped_links(survey, renamed)
        survey.relink = self._relinked(meta, record, {op.new for _, ops in pending_ops for op in ops
                                                      if isinstance(op, RenameRelation)})
        if survey.needs_scan or pending_ops:
            self._scan_documents(survey, pending_ops)
            survey.scanned = True
            if not survey.objects:
                survey.leftover = self._leftover_keys(survey)
        return survey

    def _leftover_keys(self, survey: Survey) -> tuple[str, ...]:
        """Return the fields to build having keys stored though no document is (one short scan each)."""
        meta = survey.meta
        prefixes = [(name, f"{self.keys.index_fields(meta.name)}{name}/") for name in survey.build_indexed]
        prefixes += [(name, f"{self.keys.unique_fields(meta.name)}{name}/") for name in survey.build_unique]
        prefixes += [(name, self.keys.onetoones(meta.name, name)) for name in survey.build_onetoone]
        return tuple(dict.fromkeys(name for name, prefix in prefixes
                                   if self.context.persistent.scan(prefix, limit=1)))

    def _unverified(self, meta: HybridMeta) -> tuple[str, ...]:
        """Overridden by the verifier: fields another run (stopped, or running now) marked to check."""
        return ()

    def _dropped_by_record(self, meta: HybridMeta, record: SchemaRecord | None,
                           renamed: set[str]) -> dict[str, list[str]]:
        """Return relation -> link keys of the relations the record lists and the model dropped (and no
        pending step renames): every link of one, its source stored or not, is under its target's
        ``l/<target>/``, which is all that is read."""
        dropped: dict[str, list[str]] = {}
        for name, spec in sorted((record.model.get("relations", {}) if record is not None else {}).items()):
            target = spec.get("target") if isinstance(spec, dict) else None
            if name not in meta.relations and name not in renamed and isinstance(target, str):
                prefix = f"{self.keys.root}l/{target}/"
                links = [key for key, _ in self._scan(prefix)
                         if key[len(prefix):].split("/")[1:3] == [meta.name, name]]
                if links:
                    dropped[name] = links
        return dropped

    def _find_dropped_links(self, survey: Survey, renamed: set[str]) -> None:
        """Add to ``dropped_links`` the stored links held by this hybrid through a relation the model
        does not declare (and no pending step renames), whether or not their source is still stored.

        A process of the new model deleting an object unlinks only the relations it declares: the
        link of a dropped one stays, named by no document, and blocks deleting its target.
        """
        for name, links in sorted(self._undeclared_links().get(survey.meta.name, {}).items()):
            if name not in renamed:
                survey.dropped_links[name] = sorted(links)

    def _undeclared_links(self) -> dict[str, dict[str, list[str]]]:
        """Return source hybrid -> relation it does not declare -> its link keys, for this run's hybrids.

        A link key is ``l/<target hybrid>/<target guid>/<source hybrid>/<relation>/<source guid>``:
        nothing orders links by source, so every link is read, in batches, once per run for all the
        hybrids that ask (those with no record: a run records each hybrid it migrates); only the
        undeclared ones are kept. Skipping from target to target instead would cost a round trip per
        target object, more than one per batch of links unless targets have hundreds of links each.
        """
        if self._undeclared is None:
            metas = {meta.name: meta for meta in self.metas}
            found: dict[str, dict[str, list[str]]] = {}
            prefix = f"{self.keys.root}l/"
            for key, _ in self._scan(prefix):
                parts = key[len(prefix):].split("/", 4)
                meta = metas.get(parts[2]) if len(parts) == 5 else None
                if meta is not None and parts[3] not in meta.relations:
                    found.setdefault(parts[2], {}).setdefault(parts[3], []).append(key)
            self._undeclared = found
        return self._undeclared

    def _scan_documents(self, survey: Survey, pending_ops: list[tuple[int, list[Operation]]]) -> None:
        meta = survey.meta
        holders: dict[str, dict[str, list[str]]] = {name: {} for name in survey.build_unique}
        pointing = self._family_pointing(survey)
        values: dict[tuple[str, str], Any] = {}
        prefix = self.keys.docs(meta.name)
        # a step a stopped run left midway has already rewritten the documents up to its cursor
        done = {number: self._step_cursor(number, meta) for number, _ in pending_ops}
        dangling: dict[tuple[str, str], list[str]] = {}
        valueless: dict[str, list[str]] = {stored: [] for stored in valueless_fields(meta)}
        for batch in self._batches(prefix):
            docs: list[tuple[str, Document, bool]] = []
            for doc_key, entry in batch:
                guid = doc_key[len(prefix):]
                doc, stepped = self._as_stepped(survey, pending_ops, done, doc_key,
                                                decode_doc(meta, guid, entry.value))
                docs.append((guid, doc, stepped))
                survey.objects += 1
                for name in meta.field_set - doc.keys():
                    survey.missing[name] += 1
                for name, guids in valueless.items():
                    guids += [guid] if doc.get(name) is None else []
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
            lacking = self._probe_links(meta, survey.relink, [(guid, doc) for guid, doc, _ in docs],
                                        survey.unlinked, dangling) if survey.relink else set()
            if self.dry_run:
                self._probe_keys(survey, docs, lacking)
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
                    survey.violations.append(onetoone_violation(meta, name, target, sorted(guids)))
        survey.violations += dangling_violations(meta, dangling) + valueless_violations(meta, valueless)

    def _as_stepped(self, survey: Survey, pending_ops: list[tuple[int, list[Operation]]],
                    done: dict[int, str], doc_key: str, doc: Document) -> tuple[Document, bool]:
        """(Dry runs) Return a document as the pending steps leave it (counting each step changing it in
        ``survey.step_changes``), and whether any does. A step a stopped run left midway has already
        rewritten the documents up to its cursor (``done``)."""
        guid = doc_key.rsplit("/", 1)[1]
        stepped = False
        for number, operations in pending_ops:
            if doc_key <= done[number]:
                continue
            after, _ = step_document(number, operations, survey.meta, guid, doc)
            if after is not None:
                survey.step_changes[number] += 1
                doc, stepped = after, True
        return doc, stepped

    def _step_survey(self, meta: HybridMeta, pending_ops: list[tuple[int, list[Operation]]]) -> Survey:
        """(Dry runs) Survey a hybrid the run migrates no further than its steps (not among its hybrids):
        which objects they change."""
        survey = Survey(meta, None, (), (), (), (), {}, False, scanned=True)
        done = {number: self._step_cursor(number, meta) for number, _ in pending_ops}
        for doc_key, entry in self._scan(self.keys.docs(meta.name)):
            survey.objects += 1
            doc = decode_doc(meta, doc_key.rsplit("/", 1)[1], entry.value)
            _, stepped = self._as_stepped(survey, pending_ops, done, doc_key, doc)
            survey.would_write += stepped
        return survey

    def _family_pointing(self, survey: Survey) -> dict[str, dict[str, list[str]]]:
        """Return, per one-to-one relation to build, target -> objects of the *other* hybrids holding the
        relation (its family) that point there: the constraint spans them all, so a dry run must see
        them as the run does when it writes the keys of each in turn."""
        pointing: dict[str, dict[str, list[str]]] = {}
        for name in survey.build_onetoone:
            by_target: dict[str, list[str]] = {}
            pointing[name] = by_target
            relation = survey.meta.relations[name]
            for member in family(relation):
                if member is relation or member.owner is None:
                    continue
                other = member.owner._meta
                prefix = self.keys.docs(other.name)
                for doc_key, entry in self._scan(prefix):
                    target = decode_doc(other, doc_key[len(prefix):], entry.value).get(member.guid_field)
                    if isinstance(target, str):
                        by_target.setdefault(target, []).append(doc_key[len(prefix):])
        return pointing

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

    def _probe_keys(self, survey: Survey, docs: list[tuple[str, Document, bool]], lacking: set[str]) -> None:
        """Count (dry runs) the objects of one batch a run would write: those a step changes (``docs``
        says which), lacking a field or a key, or a link it writes (``lacking``); each once, as a run
        counts them.

        Keys already stored (written by saves of the new model) are found with one multi-get, as
        the run finds them; unique and one-to-one keys are settled once violations are known.
        """
        meta = survey.meta
        keys = self.keys
        # the offenders are known once every batch is surveyed: none is left out here
        every: dict[str, set[str]] = {name: set() for name in survey.build_onetoone}
        wanted: dict[str, tuple[list[str], list[tuple[str, str]], list[tuple[str, str, str, list[str]]]]] = {}
        for guid, doc, stepped in docs:
            if stepped:
                continue
            full = filled(meta, doc)
            index = [keys.index(meta.name, name, full.get(name), guid) for name in survey.build_indexed]
            unique = [(name, keys.unique(meta.name, name, full[name])) for name in survey.build_unique
                      if full.get(name) is not None]
            wanted[guid] = (index, unique, self._onetoone_keys(meta, full, every))
        probe = [key for index, unique, onetoone in wanted.values()
                 for key in (*index, *(key for _, key in unique),
                             *(k for _, _, own, others in onetoone for k in (own, *others)))]
        present: dict[str, Entry] = self.context.persistent.get_many(probe) if probe else {}
        for guid, doc, stepped in docs:
            if stepped:
                survey.would_write += 1
                continue
            index, unique, onetoone = wanted[guid]
            if meta.field_set - doc.keys() or guid in lacking or any(key not in present for key in index):
                survey.would_write += 1
                continue
            lacking_unique = frozenset(name for name, key in unique if key not in present)
            lacking_onetoone = frozenset((name, target) for name, target, own, others in onetoone
                                         if not any(key in present for key in (own, *others)))
            if lacking_unique or lacking_onetoone:
                survey.keys_only.append((lacking_unique, lacking_onetoone))

    def _plan_text(self, survey: Survey) -> str:
        would = "would " if self.dry_run else ""
        parts = [f"{survey.objects} object{'s' * (survey.objects != 1)}"] if survey.scanned else []
        for number, count in sorted(survey.step_changes.items()):
            parts.append(f"step {number} {would}change{'s' * (not would)} {count}")
        if survey.missing:
            parts.append(f"{would}fill defaults for " + ", ".join(
                f"{name} ({count})" for name, count in sorted(survey.missing.items())))
        if survey.leftover:
            parts.append(f"{would}remove the keys of {', '.join(survey.leftover)} left by deleted objects")
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
        if survey.unverified:
            parts.append(f"{would}check keys of {', '.join(survey.unverified)} against what older processes "
                         "saved (marked by a dal migrate that stopped before checking them, or by one "
                         "running now)")
        for relation, count in sorted(survey.unlinked.items()):
            parts.append(f"{would}write {count} missing link{'s' * (count != 1)} of relation {relation} "
                         "(not listed by the schema record: declared again?)")
        for relation, links in sorted(survey.dropped_links.items()):
            parts.append(f"{would}remove {len(links)} link{'s' * (len(links) != 1)} of dropped relation "
                         f"{relation}")
        return "; ".join(parts)

    def _dry_count(self, survey: Survey) -> int:
        """Objects a real run would write: those a step changes, or lacking a field or a key it builds (not
        a violated one); each once, however many of these passes write it."""
        buildable = set(survey.buildable_unique())
        keyed = sum(1 for unique, onetoone in survey.keys_only
                    if unique & buildable or any(target not in survey.offenders.get(name, ())
                                                 for name, target in onetoone))
        return survey.would_write + keyed


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
