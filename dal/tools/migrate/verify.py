"""Checking the keys ``dal migrate`` marked ready against what older processes saved meanwhile.

A process running an older model trusts the record it read for up to ``READY_TTL``: saves it
makes in that window after a run marked a key ready (or while the run was building it) do not
maintain that key, and nothing drops it from *ready* if the process saves no more. So before
building keys a run stores a marker, ``m/verify/<hybrid>`` (the fields being built; its revision,
or ``after``, bounds the documents to check), and once every hybrid is done it waits out the
window and re-checks the keys of every document changed since: missing keys are written, entries
left for old values deleted, and the marker removed. A run stopped before that leaves the marker,
and the next run does the check.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from dal.backends.base import Delete, Put, Revision
from dal.objects import schema
from dal.objects.transaction import Document
from dal.tools.migrate.keys import HybridMigrator
from dal.tools.migrate.migrations import MigrationError
from dal.tools.migrate.report import Violation
from dal.tools.migrate.run import ATTEMPTS, decode_doc
from dal.tools.migrate.survey import Survey, filled, onetoone_violation

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

KINDS = ("indexed", "unique", "onetoone")


class KeyVerifier(HybridMigrator):
    """The markers of keys being built, and the check of them once no older process trusts the record."""

    def _marker_key(self, hybrid: str) -> str:
        return f"{self.keys.root}m/verify/{hybrid}"

    def _read_marker(self, hybrid: str) -> tuple[dict[str, list[str]], int, int] | None:
        """Return (kind -> fields, documents above this revision to check, marker revision), or None."""
        entry = self.context.persistent.get(self._marker_key(hybrid))
        if entry is None:
            return None
        try:
            data = json.loads(entry.value)
            fields = {kind: [str(name) for name in data.get(kind, [])] for kind in KINDS}
            after = int(data.get("after", entry.revision))
        except (ValueError, TypeError, AttributeError):  # not ours: check everything it could mean
            fields, after = {kind: [] for kind in KINDS}, 0
        return fields, after, entry.revision

    def _unverified(self, meta: HybridMeta) -> tuple[str, ...]:
        marker = self._read_marker(meta.name)
        return () if marker is None else tuple(sorted({n for names in marker[0].values() for n in names}))

    def _mark_building(self, survey: Survey, unique: tuple[str, ...], *, empty: bool = False) -> bool:
        """Store the marker before building keys (``empty``: the survey found no document); tell
        whether one was stored. A one-to-one relation already found violated is not built: not marked."""
        if not self.context.persistent.shared:
            return False  # no other process reaches this store: no older one can save meanwhile
        violated = {violation.field for violation in survey.violations}
        onetoone = tuple(name for name in survey.build_onetoone if name not in violated)
        fields = {"indexed": survey.build_indexed, "unique": unique, "onetoone": onetoone}
        if not any(fields.values()):
            return False
        key = self._marker_key(survey.meta.name)
        previous = self._read_marker(survey.meta.name)
        merged: dict[str, Any] = {kind: sorted(set(names) | set(previous[0][kind] if previous else ()))
                                  for kind, names in fields.items()}
        if previous is not None:
            merged["after"] = previous[1]  # the older bound covers both runs' windows
        elif empty:
            merged["after"] = 0  # any document present later was saved since the survey
        result = self._commit_result([Revision(key, previous[2] if previous else 0)],
                                     [Put(key, json.dumps(merged, sort_keys=True).encode())])
        if not result.ok:
            raise MigrationError(f"the key check marker of {survey.meta.cls.__name__} changed meanwhile; "
                                 "run only one dal migrate at a time")
        return True

    def _unmark_building(self, meta: HybridMeta) -> None:
        marker = self._read_marker(meta.name)
        if marker is not None:
            self._delete_marker(meta.name, marker[2])

    def _delete_marker(self, hybrid: str, revision: int) -> None:
        key = self._marker_key(hybrid)
        self._commit([Revision(key, revision)], [Delete(key)])

    def _verify_later(self, meta: HybridMeta, marked: frozenset[str]) -> None:
        if self.context.persistent.shared:  # else no other process reaches the store: nothing to wait for
            self._to_verify[meta.name] = (meta, time.monotonic(), marked)

    def _verify_marked(self) -> None:
        """Wait until no process trusts a record read before the marks, then check each marked hybrid."""
        if not self._to_verify:
            return
        last = max(marked_at for _, marked_at, _ in self._to_verify.values())
        time.sleep(max(0.0, last + schema.READY_TTL * 1.25 - time.monotonic()))
        for name in sorted(self._to_verify):
            meta, _, marked = self._to_verify[name]
            self._verify(meta, marked)
        self._to_verify.clear()

    def _verify(self, meta: HybridMeta, marked: frozenset[str]) -> None:
        marker = self._read_marker(meta.name)
        if marker is None:
            return
        fields, after, marker_revision = marker
        record = schema.read_record(self.context, meta.name)
        ready = frozenset() if record is None else record.ready_for(meta) | record.onetoone_ready_for(meta)
        indexed = tuple(p.name for p in meta.indexed if p.name in ready)
        unique = tuple(p.name for p in meta.unique if p.name in ready)
        onetoone: dict[str, set[str]] = {name: set() for name in schema.onetoone_relations(meta)
                                         if name in ready}
        if after > 0 or any(fields.values()):  # a readable marker: only what it names
            listed = {name for names in fields.values() for name in names}
            indexed = tuple(n for n in indexed if n in listed)
            unique = tuple(n for n in unique if n in listed)
            onetoone = {n: offenders for n, offenders in onetoone.items() if n in listed}
        changed, repaired, violations = self._check_changed(meta, after, indexed, unique, onetoone)
        if changed:
            for name in indexed:
                self._remove_stale_index(meta, name, changed)
            for name in unique:
                self._remove_stale_unique(meta, name, changed)
            for name in onetoone:
                self._remove_stale_onetoone(meta, name, changed)
        if repaired:
            self.report.up_to_date = False
            self.report.objects[meta.name] += repaired
            self.say(f"{meta.name}: {repaired} object{'s' * (repaired != 1)} saved meanwhile by a process "
                     "running an older model: keys repaired")
        if violations:
            self._unmark(meta, violations)
        gone = sorted(marked - ready)
        if gone:
            self.say(f"{meta.name}: {', '.join(gone)} no longer ready: a process running an older model "
                     "saved since; deploy the new model everywhere and run dal migrate again")
        self._delete_marker(meta.name, marker_revision)

    def _check_changed(self, meta: HybridMeta, after: int, indexed: tuple[str, ...], unique: tuple[str, ...],
                       onetoone: dict[str, set[str]]) -> tuple[set[str], int, list[Violation]]:
        """Write the missing keys of documents changed above revision ``after``; return (their guids,
        objects written, violations found)."""
        prefix = self.keys.docs(meta.name)
        changed: set[str] = set()
        late: dict[tuple[str, str], set[str]] = {}
        late_values: dict[tuple[str, str], Any] = {}
        late_targets: dict[tuple[str, str], set[str]] = {}
        repaired = 0
        for batch in self._batches(prefix):
            fresh = [(key, entry) for key, entry in batch if entry.revision > after]
            if not fresh:
                continue
            wanted: list[str] = []
            for key, entry in fresh:
                guid = key[len(prefix):]
                changed.add(guid)
                doc: Document = filled(meta, decode_doc(meta, guid, entry.value))
                wanted += self._wanted_keys(meta, guid, doc, indexed, unique, onetoone)
            present = self.context.persistent.get_many(wanted) if wanted else {}
            for key, entry in fresh:
                repaired += self._bring_up_object(meta, key, entry, present, indexed, unique, late,
                                                  late_values, onetoone, late_targets)
        violations = [Violation(meta.name, meta.cls.__name__, name, late_values[name, encoded],
                                tuple(sorted(guids))) for (name, encoded), guids in sorted(late.items())]
        violations += [onetoone_violation(meta, name, target, sorted(guids))
                       for (name, target), guids in sorted(late_targets.items())]
        return changed, repaired, violations

    def _unmark(self, meta: HybridMeta, violations: list[Violation]) -> None:
        """Take the violated fields out of *ready* (queries scan, saves check links) and report them."""
        for violation in violations:
            self.say(f"  {meta.name}: saved meanwhile by a process running an older model: "
                     f"{violation.describe()}; no longer ready, fix the data and run dal migrate again")
        self.report.violations += violations
        unique = {v.field for v in violations if v.kind == "unique"}
        onetoone = {v.field for v in violations if v.kind == "onetoone"}
        record = schema.read_record(self.context, meta.name)
        for _ in range(ATTEMPTS):
            if record is None:
                return
            _, written = schema.write_record(self.context, record.replace(
                unique=record.unique - unique, onetoone=record.onetoone - onetoone))
            self._count_commit()
            if written:
                return
            record = schema.read_record(self.context, meta.name)
        raise MigrationError(f"the schema record of {meta.cls.__name__} kept changing; run dal migrate again")
