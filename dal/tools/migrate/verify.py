"""Checking the keys ``dal migrate`` marked ready against what older processes saved meanwhile.

A process running an older model trusts the record it read for up to ``READY_TTL``: saves it
makes in that window after a run marked a key ready (or while the run was building it) do not
maintain that key, and nothing drops it from *ready* if the process saves no more. Likewise its
creates leave out the fields its model lacks: one committed after the run's pass over the
documents and before the run records them as held by every document (``fill``) is never filled,
and the record no longer marks them ``lacking``. So before building keys or filling fields a run
stores a marker of its own, ``m/verify/<hybrid>/<run id>`` (the fields being built or filled; its
first revision, or ``after``, bounds the documents to check), stores it again just before
recording them, and once every hybrid is done it waits out the window and re-checks every
document changed since: missing fields and keys are written, entries left for old values
deleted, and its marker removed. The run checks from the bound it holds in memory, so another
run removing its marker takes nothing from its check.

A run stopped before its check leaves its marker, and the next run checks it too. The next run
cannot tell it from the marker of a run going on now, so it removes a marker of another run
only if that marker has not changed since its survey: the run storing it has marked nothing
ready since (or is gone), and the check comes a full window after the survey. A marker that
changed is that run's to remove.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from dal.backends.base import Delete, Put, Revision
from dal.objects import schema
from dal.tools.migrate.keys import HybridMigrator, filled_fields
from dal.tools.migrate.migrations import MigrationError
from dal.tools.migrate.report import Violation, unbuilt_fields
from dal.tools.migrate.run import ATTEMPTS, CompleteKeys
from dal.tools.migrate.survey import Survey

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

#: a marker's lists: the fields whose keys of each kind are built, and those filled (``fill``)
KINDS = ("indexed", "unique", "onetoone", "fill")

#: (kind -> fields, documents above this revision to check, the marker's revision)
Marker = tuple[dict[str, list[str]], int, int]


class KeyVerifier(HybridMigrator):
    """The markers of keys being built, and the check of them once no older process trusts the record."""

    def _marker_key(self, hybrid: str) -> str:
        """Return the key of this run's marker; ``m/verify/<hybrid>`` alone is that of an older dal."""
        return f"{self.keys.root}m/verify/{hybrid}/{self.run_id}"

    def _read_markers(self, hybrid: str) -> dict[str, Marker]:
        """Return the markers of ``hybrid``, of every run (and the single one an older dal stored)."""
        single = f"{self.keys.root}m/verify/{hybrid}"
        markers: dict[str, Marker] = {}
        for key, entry in self._scan(single):
            if key != single and not key.startswith(f"{single}/"):
                continue  # another hybrid whose name starts with this one's
            try:
                data = json.loads(entry.value)
                fields = {kind: [str(name) for name in data.get(kind, [])] for kind in KINDS}
                after = int(data.get("after", entry.revision))
            except (ValueError, TypeError, AttributeError):  # not ours: check everything it could mean
                fields, after = {kind: [] for kind in KINDS}, 0
            markers[key] = (fields, after, entry.revision)
        return markers

    def _unverified(self, meta: HybridMeta) -> tuple[str, ...]:
        markers = self._read_markers(meta.name)
        self._foreign_marks[meta.name] = markers  # checked with this run's, removed if still unchanged
        return tuple(sorted({n for fields, _, _ in markers.values() for names in fields.values()
                             for n in names}))

    def _mark_building(self, survey: Survey, unique: tuple[str, ...], *, empty: bool = False) -> bool:
        """Store this run's marker before building keys or filling fields (``empty``: check every
        document after the run, not only those saved since the marker); tell whether one was stored.
        A one-to-one relation already found violated is not built: not marked."""
        if self.dry_run or not self.context.persistent.shared:
            return False  # no other process reaches this store: no older one can save meanwhile
        violated = unbuilt_fields(survey.violations)  # as the run builds them (keys.py)
        onetoone = tuple(name for name in survey.build_onetoone if name not in violated)
        fields = {"indexed": sorted(survey.build_indexed), "unique": sorted(unique),
                  "onetoone": sorted(onetoone), "fill": filled_fields(survey)}
        if not any(fields.values()):
            return False
        # empty: every document is checked (none present, or the run does not pass over them again)
        revision = self._put_marker(survey.meta.name, fields, 0 if empty else None)
        self._own_marks[survey.meta.name] = (fields, 0 if empty else revision, revision)
        return True

    def _remark_building(self, meta: HybridMeta) -> None:
        """Store this run's marker again just before marking its keys ready: a run that read it
        before sees it changed and leaves it (its check may come too early for this run's window);
        and another run that removed it meanwhile (taking it for a stopped run's) did not remove
        what a kill of this run from now on must leave."""
        own = self._own_marks.get(meta.name)
        if own is not None:
            fields, after, _ = own
            self._own_marks[meta.name] = (fields, after, self._put_marker(meta.name, fields, after))

    def _put_marker(self, hybrid: str, fields: dict[str, list[str]], after: int | None) -> int:
        data: dict[str, Any] = dict(fields)
        if after is not None:
            data["after"] = after
        result = self._commit_result([], [Put(self._marker_key(hybrid),
                                              json.dumps(data, sort_keys=True).encode())])
        if not result.ok:
            raise MigrationError(f"the key check marker of {hybrid} could not be stored; "
                                 "run dal migrate again")
        return result.revision

    def _unmark_building(self, meta: HybridMeta) -> None:
        own = self._own_marks.pop(meta.name, None)
        if own is not None:
            key = self._marker_key(meta.name)
            self._commit([Revision(key, own[2])], [Delete(key)])

    def _verify_later(self, meta: HybridMeta, marked: CompleteKeys) -> None:
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

    def _verify(self, meta: HybridMeta, marked: CompleteKeys) -> None:
        own = self._own_marks.pop(meta.name, None)
        foreign = self._foreign_marks.pop(meta.name, {})
        # this run's bound is held here, not read back: another run may have removed its marker
        markers = list(foreign.values()) + ([own] if own is not None else [])
        if not markers:
            return
        after = min(bound for _, bound, _ in markers)
        # a marker naming no field and no bound is unreadable: it may mean any field
        listed: set[str] | None = set()
        for fields, bound, _ in markers:
            if bound <= 0 and not any(fields.values()):
                listed = None
            elif listed is not None:
                listed.update(name for names in fields.values() for name in names)
        # each kind on its own: an index marked ready is checked though the unique keys are not ready
        ready = CompleteKeys.of(schema.read_record(self.context, meta.name), meta)
        indexed = tuple(p.name for p in meta.indexed if p.name in ready.indexed)
        unique = tuple(p.name for p in meta.unique if p.name in ready.unique)
        onetoone: dict[str, set[str]] = {name: set() for name in schema.onetoone_relations(meta)
                                         if name in ready.onetoone}
        if listed is not None:  # readable markers: only what they name
            indexed = tuple(n for n in indexed if n in listed)
            unique = tuple(n for n in unique if n in listed)
            onetoone = {n: offenders for n, offenders in onetoone.items() if n in listed}
        changed: set[str] = set()  # the documents saved above the bound: their stale entries go too
        repaired, violations = self._bring_up_documents(meta, indexed, unique, onetoone, after=after,
                                                        done=changed.add)
        if changed:
            for name in indexed:
                self._remove_stale_index(meta, name, changed)
            for name in unique:
                self._remove_stale_unique(meta, name, changed)
            for name in onetoone:
                self._remove_stale_onetoone(meta, name, changed)
        if repaired:
            self.report.up_to_date = False
            self.say(f"{meta.name}: {repaired} object{'s' * (repaired != 1)} saved meanwhile by a process "
                     "running an older model: fields and keys repaired")
        if violations:
            self._unmark(meta, violations)
        gone = marked.lost(ready)
        if gone:
            self.say(f"{meta.name}: {', '.join(gone)} no longer ready: a process running an older model "
                     "saved since; deploy the new model everywhere and run dal migrate again")
        # each marker only as read: one stored again since is that of a run marking keys ready now
        removed = dict(foreign)
        if own is not None:
            removed[self._marker_key(meta.name)] = own
        for key, (_, _, revision) in sorted(removed.items()):
            self._commit([Revision(key, revision)], [Delete(key)])

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
