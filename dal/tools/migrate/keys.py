"""The per-hybrid pass of ``dal migrate``: survey, defaults, index and unique keys, stale keys.

For each hybrid whose schema record is not up to date: a read-only survey, then removal of
stale entries under the keys being built, one compare-and-set commit per object needing
defaults or keys, deletion of keys and links the model no longer declares, and the record.

The survey is :mod:`dal.tools.migrate.survey`, the removal of stale keys
:mod:`dal.tools.migrate.stale`; building keys and the record are here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dal.backends.base import Check, Entry, Op, Put, Revision
from dal.keys import encode_value
from dal.objects import schema
from dal.objects.schema import SchemaRecord, complete_record, stored_fields
from dal.objects.transaction import Document, encode
from dal.tools.migrate.migrations import MigrationError, Operation
from dal.tools.migrate.report import Violation, unbuilt_fields, valueless_fields
from dal.tools.migrate.run import ATTEMPTS, CompleteKeys, decode_doc
from dal.tools.migrate.stale import StaleKeyRemover
from dal.tools.migrate.survey import Survey, Surveyor, filled, onetoone_violation

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

EMPTY: Mapping[tuple[str, str], str] = MappingProxyType({})


class HybridMigrator(Surveyor, StaleKeyRemover):
    """The per-hybrid pass of a run, after the steps."""

    def _migrate_hybrid(self, meta: HybridMeta, pending_ops: list[tuple[int, list[Operation]]]) -> None:
        survey = self._survey(meta, pending_ops)
        if not survey.has_work:
            self._bookkeeping(survey)
            return
        self.report.up_to_date = False
        self.say(f"{meta.name}: {self._plan_text(survey)}")
        reported = self._first_reports(survey.violations)
        self.report.violations += reported
        if self.dry_run:
            self._say_violations(reported)
            self.report.objects[meta.name] += self._dry_count(survey)
            return
        distrusted_at = self._distrust_stale(survey)
        buildable = survey.buildable_unique()
        # before anything is built: documents an older process saves from now on are checked after
        marked = self._mark_building(survey, buildable)
        for name in survey.build_indexed:
            self._remove_stale_index(meta, name)
        for name in buildable:
            self._remove_stale_unique(meta, name)
        for name in survey.build_onetoone:
            self._remove_stale_onetoone(meta, name)
        self._say_violations(reported, self._claim_violated(survey))
        late: list[Violation] = []
        if survey.unlinked:
            found = self._relink(meta, survey.relink, survey.objects)
            late += [violation for violation in found if violation not in survey.violations]
        if survey.needs_scan:
            late += self._bring_up(survey, buildable)
        self._say_violations(late, late=True)
        self.report.violations += late
        self._drop_stale_keys(survey, distrusted_at)
        self._drop_relations(survey)
        late_fields = {v.field for v in late}
        violated = late_fields | unbuilt_fields(survey.violations)
        built_unique = tuple(name for name in buildable if name not in late_fields)
        built_onetoone = tuple(name for name in survey.build_onetoone if name not in violated)
        if marked:
            self._remark_building(meta)
        self._record(survey, built_indexed=survey.build_indexed, built_unique=built_unique,
                     built_onetoone=built_onetoone, unlinked=frozenset(
                         v.field for v in (*survey.violations, *late) if v.kind == "dangling"),
                     valueless=valueless_stored(survey))
        built = CompleteKeys(frozenset(survey.build_indexed), frozenset(built_unique),
                             frozenset(built_onetoone))
        # fields filled: a create by an older process before the record write may lack them
        if built or survey.unverified or (marked and filled_fields(survey)):
            self._verify_later(meta, built)
        elif marked:  # nothing made ready (violations only): no window to check, no marker to leave
            self._unmark_building(meta)

    def _say_violations(self, violations: list[Violation], keepers: Mapping[tuple[str, str], str] = EMPTY, *,
                        late: bool = False) -> None:
        """Say what each violation leaves unbuilt and how to fix it; ``late``: found while keys were built
        (a live process wrote one of the objects meanwhile); ``keepers``: the holder of each violated
        unique value that holds its key (see :meth:`_claim_violated`)."""
        for violation in violations:
            what = violation.describe()
            if violation.kind == "mandatory":
                self.say(f"  no value for them: {what}; give each a value (set it and save, or a migration "
                         "step), declare a default, or delete them")
            elif violation.kind == "dangling":
                self.say(f"  no link written for them: {what}; point them at a stored {violation.target} "
                         "or at None, or delete them")
            elif violation.kind == "onetoone":
                self.say(f"  no one-to-one key written for them: {what}" + (
                    " (one of them written meanwhile by a live process, or by a subclass hybrid holding the "
                    "relation too)" if late else "; unlink all but one"))
            elif late:
                self.say(f"  unique keys of {violation.cls_name}.{violation.field} not complete: {what} "
                         "(written meanwhile by a live process)")
            else:
                keeper = keepers.get((violation.field, encode_value(violation.value)))
                fix = "change or delete all but one" if keeper is None else (
                    f"{keeper} holds its unique key, so no other object can take the value: change or delete "
                    "the others")
                self.say(f"  unique keys of {violation.cls_name}.{violation.field} not built: {what}; {fix}")

    def _bookkeeping(self, survey: Survey) -> None:
        """Record a hybrid no object of which needs a change (none lacks a field and there is none
        to key, or only types, defaults or flags changed, which need no data change): a record
        written (or, dry, that would be) is work, counted in the summary."""
        meta = survey.meta
        current = complete_record(meta)
        record = survey.record
        if record is not None and (record.fingerprint == current.fingerprint
                                   and record.ready_for(meta) == current.ready_for(meta)
                                   and record.onetoone_ready_for(meta) == current.onetoone_ready_for(meta)):
            return
        self.report.up_to_date = False
        if not self.report.objects.get(meta.name):  # objects a step changed: not a record alone
            self.report.recorded.append(meta.name)
        built = CompleteKeys(frozenset(survey.build_indexed), frozenset(survey.build_unique),
                             frozenset(survey.build_onetoone))
        if self.dry_run:
            return
        # an older process may still store an object without these keys or fields (not scanned
        # again here: every document is checked after the run)
        marked = self._mark_building(survey, survey.build_unique, empty=True)
        self._record(survey, built_indexed=survey.build_indexed, built_unique=survey.build_unique,
                     built_onetoone=survey.build_onetoone)
        if built or marked:
            self._verify_later(meta, built)

    def _dry_steps_only(self, meta: HybridMeta, pending_ops: list[tuple[int, list[Operation]]]) -> None:
        """(Dry runs) Say and count what the pending steps change in a hybrid the run migrates no further
        (not among its hybrids): the run rewrites those objects, and counts them, all the same."""
        survey = self._step_survey(meta, pending_ops)
        if survey.step_changes:
            self.say(f"{meta.name}: {self._plan_text(survey)} (not among the hybrids migrated: its "
                     "defaults and keys are left as they are)")
            self.report.objects[meta.name] += survey.would_write

    def _mark_building(self, survey: Survey, unique: tuple[str, ...], *, empty: bool = False) -> bool:
        """Overridden by the verifier (:mod:`dal.tools.migrate.verify`): before building keys or filling
        fields; tell whether a marker was written."""
        return False

    def _remark_building(self, meta: HybridMeta) -> None:
        """Overridden by the verifier (:mod:`dal.tools.migrate.verify`): just before marking keys ready."""

    def _unmark_building(self, meta: HybridMeta) -> None:
        """Overridden by the verifier (:mod:`dal.tools.migrate.verify`)."""

    def _verify_later(self, meta: HybridMeta, marked: CompleteKeys) -> None:
        """Overridden by the verifier (:mod:`dal.tools.migrate.verify`)."""

    def _first_reports(self, violations: list[Violation]) -> list[Violation]:
        """Return the violations not yet reported: one of a one-to-one relation inherited by subclass
        hybrids is found by the survey of each of them, and said once."""
        fresh = []
        for violation in violations:
            seen = (violation.kind, violation.field, str(violation.value), frozenset(violation.guids))
            if violation.kind != "onetoone" or seen not in self._reported:
                self._reported.add(seen)
                fresh.append(violation)
        return fresh

    # --- building keys ------------------------------------------------------------------------

    def _bring_up(self, survey: Survey, buildable_unique: tuple[str, ...]) -> list[Violation]:
        """Fill missing fields and write missing keys, one compare-and-set commit per object."""
        meta = survey.meta
        onetoone = {name: survey.offenders.get(name, set()) for name in survey.build_onetoone}
        with self.progress(survey.objects, f"migrate {meta.name}") as meter:
            _, late = self._bring_up_documents(meta, survey.build_indexed, buildable_unique, onetoone,
                                               done=lambda _: meter.advance())
        return late

    def _bring_up_documents(self, meta: HybridMeta, indexed: tuple[str, ...], unique: tuple[str, ...],
                            onetoone: dict[str, set[str]], *, done: Callable[[str], object],
                            after: int | None = None) -> tuple[int, list[Violation]]:
        """Fill the missing fields and write the missing keys of the documents of ``meta`` (only those
        above revision ``after``, if given), one compare-and-set commit per object, calling ``done``
        with the guid of each once handled; return (objects written, violations found).

        The run's pass over a hybrid and the verifier's check of what older processes saved share it.
        """
        prefix = self.keys.docs(meta.name)
        late: dict[tuple[str, str], set[str]] = {}
        late_values: dict[tuple[str, str], Any] = {}
        #: (relation, target) -> objects found pointing there (holding its key, or being keyed now)
        late_targets: dict[tuple[str, str], set[str]] = {}
        written = 0
        for batch in self._batches(prefix):
            fresh = batch if after is None else [(key, entry) for key, entry in batch
                                                 if entry.revision > after]
            wanted: list[str] = []
            for doc_key, entry in fresh:
                guid = doc_key[len(prefix):]
                doc = filled(meta, decode_doc(meta, guid, entry.value))
                wanted += self._wanted_keys(meta, guid, doc, indexed, unique, onetoone)
            present = self.context.persistent.get_many(wanted) if wanted else {}
            for doc_key, entry in fresh:
                written += self._bring_up_object(meta, doc_key, entry, present, indexed, unique, late,
                                                 late_values, onetoone, late_targets)
                done(doc_key[len(prefix):])
        violations = [Violation(meta.name, meta.cls.__name__, name, late_values[name, encoded],
                                tuple(sorted(guids))) for (name, encoded), guids in sorted(late.items())]
        violations += [onetoone_violation(meta, name, target, sorted(guids))
                       for (name, target), guids in sorted(late_targets.items())]
        return written, violations

    def _wanted_keys(self, meta: HybridMeta, guid: str, doc: Document, indexed: tuple[str, ...],
                     unique: tuple[str, ...], onetoone: dict[str, set[str]] | None = None) -> list[str]:
        wanted = [self.keys.index(meta.name, name, doc.get(name), guid) for name in indexed]
        wanted += [self.keys.unique(meta.name, name, doc[name]) for name in unique
                   if doc.get(name) is not None]
        wanted += [key for _, _, key, family_keys in self._onetoone_keys(meta, doc, onetoone or {})
                   for key in (key, *family_keys)]
        return wanted

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
            doc = filled(meta, stored)
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
                self._changed(meta.name, guid)
                return 1
            current = result.current.get(doc_key) if 0 in result.failed else current
        raise MigrationError(f"{meta.cls.__name__} {guid} kept changing while being migrated; "
                             "run dal migrate again")

    def _record(self, survey: Survey, built_indexed: tuple[str, ...], built_unique: tuple[str, ...],
                built_onetoone: tuple[str, ...] = (), unlinked: frozenset[str] = frozenset(),
                valueless: frozenset[str] = frozenset()) -> None:
        """Record the model the documents now match and which keys are complete; relations with objects
        left without their link (``unlinked``: their target is not stored) are left out of its model, so
        the next run looks for their links again (see :mod:`dal.tools.migrate.links`); the stored fields
        of mandatory ones some object holds no value of (``valueless``) are marked ``lacking``, so the
        next run scans the documents and reports the objects again until each has a value."""
        meta = survey.meta
        record = schema.read_record(self.context, meta.name)
        target = complete_record(meta)
        if unlinked:
            relations = target.model["relations"]
            target = target.replace(model={**target.model, "relations": {
                name: spec for name, spec in relations.items() if name not in unlinked}})
        if valueless:
            target = target.replace(model={**target.model, "lacking": sorted(valueless)})
        for _ in range(ATTEMPTS):
            if record is not None and _same_record(record, target, built_indexed, built_unique,
                                                   built_onetoone):
                return  # as stored (a field still lacking values): a write would only drop cached plans
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


def _same_record(record: SchemaRecord, target: SchemaRecord, built_indexed: tuple[str, ...],
                 built_unique: tuple[str, ...], built_onetoone: tuple[str, ...]) -> bool:
    """Tell whether writing ``target`` with the keys built would store ``record`` as it is."""
    return (record.model == target.model and record.fingerprint == target.fingerprint
            and record.indexed == (record.indexed & target.indexed) | set(built_indexed)
            and record.unique == (record.unique & target.unique) | set(built_unique)
            and record.onetoone == (record.onetoone & target.onetoone) | set(built_onetoone))


def valueless_stored(survey: Survey) -> frozenset[str]:
    """Return the stored fields of the mandatory properties and relations the survey found objects
    holding no value of."""
    meta = survey.meta
    names = {v.field for v in survey.violations if v.kind == "mandatory"}
    return frozenset(stored for stored, name in valueless_fields(meta).items() if name in names)


def filled_fields(survey: Survey) -> list[str]:
    """Return the fields a run fills and then records as held by every document, when an older process
    may be creating documents without them (none else: such a run is checked after, and waits): the
    survey found a document lacking a field, or the record marks one ``lacking``, or does not list one
    (an older model recorded it: its processes create without the field and mark nothing). Not the
    mandatory fields without a default that objects hold no value of: the run records them ``lacking``
    again, not held, so a create without them needs no check (and a run waits for nothing)."""
    record, missing = survey.record, set(survey.missing)
    if record is None:  # no record: only a document lacking a field tells of an older process
        fields = survey.meta.field_set | missing if missing else set()
    else:  # stored_fields leaves out the fields the record marks lacking: they count as not held
        fields = (survey.meta.field_set - stored_fields(record.model)) | missing
    return sorted(fields - valueless_stored(survey))
