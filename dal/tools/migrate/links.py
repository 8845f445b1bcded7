"""The links ``dal migrate`` writes back: those of relations the schema record's model does not list.

A relation the model dropped loses its link keys to ``dal migrate`` (they would block deleting
their targets), while its documents keep ``<relation>_guid``. Declared again (a rollback), reads
follow the field at once, but without its link a target could be deleted under it, and queries on
the relation (which use link keys) miss the object. So for each relation the record's model does not
list (every one, when there is no record), the survey looks up the link of every document pointing
somewhere, and the run writes those missing, each object in one commit checked against its
revision and the target's existence. An object pointing at a target that is not stored gets no link
and is reported (a violation: exit 1); the record then leaves the relation out of its model, so the
next run looks again.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from dal.backends.base import Check, Entry, Exists, Op, Put, Revision
from dal.model.validation import valid_guid
from dal.objects.schema import SchemaRecord
from dal.objects.transaction import Document
from dal.tools.migrate.migrations import MigrationError
from dal.tools.migrate.report import Violation
from dal.tools.migrate.run import ATTEMPTS, MigrationRun, decode_doc

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

#: (guid, relation, target guid, its link key, the target's document key) per link to look up
Wanted = list[tuple[str, str, str, str, str]]


class LinkRebuilder(MigrationRun):
    """Find and write the missing links of relations the record did not list."""

    def _relinked(self, meta: HybridMeta, record: SchemaRecord | None,
                  renamed_to: set[str]) -> tuple[str, ...]:
        """Return the relations of ``meta`` whose links may be missing: those the record's model does not
        list, but for those a pending step renames a relation to (the step writes their links)."""
        listed = record.model.get("relations", {}) if record is not None else {}
        return tuple(name for name, relation in sorted(meta.relations.items())
                     if relation.target is not None and name not in listed and name not in renamed_to)

    def _links_of(self, meta: HybridMeta, relations: tuple[str, ...],
                  docs: list[tuple[str, Document]]) -> Wanted:
        wanted: Wanted = []
        for guid, doc in docs:
            for name in relations:
                relation = meta.relations[name]
                target = doc.get(relation.guid_field)
                if relation.target is None or not valid_guid(target):
                    continue
                hybrid = relation.target._meta.name
                wanted.append((guid, name, target, self.keys.link(hybrid, target, meta.name, name, guid),
                               self.keys.doc(hybrid, target)))
        return wanted

    def _lookup(self, wanted: Wanted) -> dict[str, Entry]:
        keys = sorted({key for *_, link, target_doc in wanted for key in (link, target_doc)})
        return self.context.persistent.get_many(keys) if keys else {}

    def _probe_links(self, meta: HybridMeta, relations: tuple[str, ...], docs: list[tuple[str, Document]],
                     unlinked: Counter[str], dangling: dict[tuple[str, str], list[str]]) -> set[str]:
        """Look up the links of one batch of documents through ``relations``: count the missing ones a
        run writes (in ``unlinked``, per relation), note the objects pointing at a target not stored (in
        ``dangling``, per relation and target); return the guids of the objects a run writes a link for."""
        wanted = self._links_of(meta, relations, docs)
        present = self._lookup(wanted)
        lacking = set()
        for guid, name, target, link, target_doc in wanted:
            if link in present:
                continue
            if target_doc in present:
                unlinked[name] += 1
                lacking.add(guid)
            else:
                dangling.setdefault((name, target), []).append(guid)
        return lacking

    def _relink(self, meta: HybridMeta, relations: tuple[str, ...], objects: int) -> list[Violation]:
        """Write the missing links of ``relations``, one commit per object; return the dangling relations
        found (objects pointing at a target that is not stored), as violations."""
        prefix = self.keys.docs(meta.name)
        dangling: dict[tuple[str, str], list[str]] = {}
        with self.progress(objects, f"link {meta.name}") as meter:
            for batch in self._batches(prefix):
                docs = [(key[len(prefix):], decode_doc(meta, key[len(prefix):], entry.value))
                        for key, entry in batch]
                lacking = self._probe_links(meta, relations, docs, Counter(), dangling)
                for doc_key, entry in batch:
                    if doc_key[len(prefix):] in lacking:
                        self._link_object(meta, relations, doc_key, entry, dangling)
                meter.advance(len(batch))
        return dangling_violations(meta, dangling)

    def _link_object(self, meta: HybridMeta, relations: tuple[str, ...], doc_key: str, entry: Entry,
                     dangling: dict[tuple[str, str], list[str]]) -> None:
        """Write the missing links of one object in a commit checked against its revision and its targets'
        existence; note in ``dangling`` a target found missing."""
        guid = doc_key.rsplit("/", 1)[1]
        current: Entry | None = entry
        for _ in range(ATTEMPTS):
            if current is None:
                return  # deleted meanwhile
            doc = decode_doc(meta, guid, current.value)
            wanted = self._links_of(meta, relations, [(guid, doc)])
            present = self._lookup(wanted)
            checks: list[Check] = [Revision(doc_key, current.revision)]
            ops: list[Op] = []
            for _, name, target, link, target_doc in wanted:
                if link in present:
                    continue
                if target_doc not in present:  # deleted since the probe
                    dangling.setdefault((name, target), []).append(guid)
                    continue
                checks.append(Exists(target_doc))
                ops.append(Put(link, b""))
            if not ops:
                return
            # queries on a relation use its link keys: results cached without this object are stale
            unlinked = {**doc, **{meta.relations[name].guid_field: None for name in relations}}
            result = self._commit_result(checks, ops, self._invalidation(meta, guid, unlinked, doc))
            if result.ok:
                self._changed(meta.name, guid, by_step=True)  # counted once, whatever else writes it
                return
            current = result.current.get(doc_key) if 0 in result.failed else current
        raise MigrationError(f"{meta.cls.__name__} {guid} kept changing while its links were written; "
                             "run dal migrate again")


def dangling_violations(meta: HybridMeta, dangling: dict[tuple[str, str], list[str]]) -> list[Violation]:
    """Return one violation per (relation, target not stored) and the objects pointing there."""
    found = []
    for (name, target), guids in sorted(dangling.items()):
        relation = meta.relations[name]
        kind = relation.target.__name__ if relation.target is not None else str(relation.foreign_type)
        found.append(Violation(meta.name, meta.cls.__name__, name, target, tuple(sorted(set(guids))),
                               kind="dangling", target=kind))
    return found
