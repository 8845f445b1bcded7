"""Removing keys ``dal migrate`` must not trust: stale entries under keys it builds, undeclared keys; and
the unique key of a value several objects share, given to one of them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dal.backends.base import Check, Delete, DeletePrefix, Entry, Put, Revision
from dal.keys import encode_value
from dal.objects import schema
from dal.objects.transaction import Document
from dal.tools.migrate.migrations import MigrationError
from dal.tools.migrate.report import Violation
from dal.tools.migrate.run import ATTEMPTS, MigrationRun, decode_doc
from dal.tools.migrate.survey import Survey, value_of

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta


#: links deleted per commit when a relation was dropped (etcd limits operations per transaction)
DELETE_BATCH = 50


class StaleKeyRemover(MigrationRun):
    """Remove stale index entries, unique and one-to-one keys, and the keys of dropped relations."""

    def _remove_stale_index(self, meta: HybridMeta, name: str, only: set[str] | None = None) -> None:
        """Delete index entries of ``name`` that no longer match their object (left by an older model);
        with ``only``, just the entries of those objects."""
        prefix = f"{self.keys.index_fields(meta.name)}{name}/"
        for batch in self._batches(prefix):
            parsed = [(key, *key[len(prefix):].split("/", 1)) for key, _ in batch]
            if only is not None:
                parsed = [(key, encoded, guid) for key, encoded, guid in parsed if guid in only]
                if not parsed:
                    continue
            docs = self.context.persistent.get_many([self.keys.doc(meta.name, guid) for _, _, guid in parsed])
            for key, encoded, guid in parsed:
                doc_key = self.keys.doc(meta.name, guid)
                current = docs.get(doc_key)
                for _ in range(ATTEMPTS):
                    if current is not None and encode_value(
                            value_of(meta, decode_doc(meta, guid, current.value), name)) == encoded:
                        break
                    checks: list[Check] = [Revision(doc_key, current.revision if current else 0)]
                    if self._commit(checks, [Delete(key)]):
                        break
                    current = self.context.persistent.get(doc_key)

    def _remove_stale_unique(self, meta: HybridMeta, name: str, only: set[str] | None = None) -> None:
        """Delete unique keys of ``name`` whose owner no longer holds that value."""
        self._remove_stale_keys(meta, f"{self.keys.unique_fields(meta.name)}{name}/",
                                lambda doc, rest: encode_value(value_of(meta, doc, name)) == rest, only)

    def _remove_stale_onetoone(self, meta: HybridMeta, name: str, only: set[str] | None = None) -> None:
        """Delete one-to-one keys of ``name`` whose owner no longer points at their target."""
        guid_field = meta.relations[name].guid_field
        self._remove_stale_keys(meta, self.keys.onetoones(meta.name, name),
                                lambda doc, rest: doc.get(guid_field) == rest, only)

    def _remove_stale_keys(self, meta: HybridMeta, prefix: str,
                           holds: Callable[[Document, str], bool], only: set[str] | None = None) -> None:
        """Delete the keys under ``prefix`` (each naming its owner's guid) whose owner no longer
        ``holds`` them, given its document and the key's text after ``prefix``; conditionally on
        both revisions, re-reading both when a writer got there first. With ``only``, just the keys
        those objects own."""
        for batch in self._batches(prefix):
            owners = {key: entry.value.decode(errors="replace") for key, entry in batch}
            if only is not None:
                batch = [(key, entry) for key, entry in batch if owners[key] in only]
                owners = {key: owners[key] for key, _ in batch}
                if not batch:
                    continue
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

    def _claim_violated(self, survey: Survey) -> dict[tuple[str, str], str]:
        """Give the unique key of each value several objects share to one of them (the one it names
        already, else the first by guid still holding the value); return (field, encoded value) -> that
        holder. While the violation stands no other object can take the value, and a save changing
        another holder leaves the key (a write deletes only a unique key naming itself), so changing or
        deleting all the others settles it. Keys naming an object that no longer holds their value go
        first, as for the keys being built."""
        keepers: dict[tuple[str, str], str] = {}
        violations = [violation for violation in survey.violations if violation.kind == "unique"]
        for name in sorted({violation.field for violation in violations}):
            self._remove_stale_unique(survey.meta, name)
        for violation in violations:
            keeper = self._claim(survey.meta, violation)
            if keeper is not None:
                keepers[violation.field, encode_value(violation.value)] = keeper
        return keepers

    def _claim(self, meta: HybridMeta, violation: Violation) -> str | None:
        """Store the unique key of ``violation``'s value, unless stored, naming the first holder still
        holding the value, conditionally on its document's revision; return the holder it names."""
        key = self.keys.unique(meta.name, violation.field, violation.value)
        encoded = encode_value(violation.value)
        holders = {self.keys.doc(meta.name, guid): guid for guid in sorted(violation.guids)}
        for _ in range(ATTEMPTS):
            entry = self.context.persistent.get(key)
            if entry is not None:
                return entry.value.decode(errors="replace")
            docs = self.context.persistent.get_many(list(holders))
            holding = [(doc_key, stored) for doc_key, stored in docs.items() if encode_value(value_of(
                meta, decode_doc(meta, holders[doc_key], stored.value), violation.field)) == encoded]
            if not holding:
                return None  # none of them holds the value any more
            doc_key, doc = min(holding, key=lambda found: holders[found[0]])
            guid = holders[doc_key]
            if self._commit([Revision(key, 0), Revision(doc_key, doc.revision)], [Put(key, guid.encode())]):
                return guid
        return None  # the key or the holders kept changing: the next run claims it
