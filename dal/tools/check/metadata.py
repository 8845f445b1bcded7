"""The pass over the metadata areas: schema records (``m/schema/``) and queued dynamics (``m/cachequeue/``).

A schema record dal cannot read counts as one with nothing ready (:mod:`dal.objects.schema_format`):
reported for ``dal migrate`` to rewrite. A schema record or queued dynamic of a hybrid, or a queued
dynamic the model does not declare, is an orphan key: ``dal cache prefetch`` skips such a dynamic.
A repair deletes one only when nothing can be lost: a record or queued dynamic of a hybrid with no
stored document (the commit checks there is still none: the next save into it records it anew; a
record's removal drops the hybrid's schema version, as every record write does, so no process keeps
a query result planned from it). A queued dynamic its declared hybrid does not declare may be a newer
model's (a rolling deploy), and what names a hybrid with stored documents may belong to a model not
passed with ``--hybrids``: both left for a person.
"""

from __future__ import annotations

from dal.backends.base import Check, Delete, Entry, PrefixEmpty, Revision
from dal.objects.schema_format import record_fault
from dal.tools.check.problems import Fix, Kind
from dal.tools.check.state import CheckState


class MetadataPass(CheckState):
    """Check schema records and queued dynamics against the model (after the documents are counted)."""

    def metadata(self) -> None:
        for key, rest, entry in self.scan_under(self.keys.schemas()):
            self.schema_record(key, rest, entry)
        for key, rest, entry in self.scan_under(self.keys.cache_queue()):
            self.queued_dynamic(key, rest, entry)

    def schema_record(self, key: str, rest: str, entry: Entry) -> None:
        meta = self.metas.get(rest)
        if meta is None:
            self.orphan(key, rest, entry, f"schema record of undeclared hybrid {rest!r}")
            return
        fault = record_fault(entry.value)
        if fault is not None:
            self.add(Kind.INVALID_SCHEMA, key, f"the schema record of {meta.cls.__name__} cannot be read "
                     f"({fault}), so none of its index, unique or one-to-one keys counts as built: queries "
                     "scan and saves check links instead; run `dal migrate`, which rewrites it", meta.name)

    def queued_dynamic(self, key: str, rest: str, entry: Entry) -> None:
        hybrid, _, named = rest.partition("/")
        guid, _, dynamic = named.partition("/")
        meta = self.metas.get(hybrid)
        if meta is None:
            self.orphan(key, hybrid, entry, f"queued dynamic of undeclared hybrid {hybrid!r}")
        elif not guid or dynamic not in meta.dynamics:
            name = meta.cls.__name__
            self.add(Kind.ORPHAN_KEY, key, f"queued dynamic {dynamic!r} of {name} {guid or '?'}, which "
                     f"{name} does not declare: `dal cache prefetch` skips it; a process of a newer model "
                     "may declare it, else delete the key", hybrid, guid)

    def orphan(self, key: str, hybrid: str, entry: Entry, what: str) -> None:
        """Report a key naming an undeclared hybrid; repairable while no document of it is stored."""
        if self.report.documents.get(hybrid):
            self.add(Kind.ORPHAN_KEY, key, f"{what}, which has stored documents: pass the module declaring "
                     "it with --hybrids, or delete the key", hybrid)
            return
        checks: tuple[Check, ...] = (Revision(key, entry.revision), PrefixEmpty(self.keys.docs(hybrid)))
        # a schema record's removal is a record write: its hybrid's schema version goes (schema.as_of)
        dropped = (self.keys.schema_version(hybrid),) if key.startswith(self.keys.schemas()) else ()
        self.add(Kind.ORPHAN_KEY, key, f"{what}, which has no stored document: pass the module declaring it "
                 "with --hybrids, or delete the key (`dal check --repair` does)", hybrid,
                 fix=Fix(checks, (Delete(key),), dropped))
