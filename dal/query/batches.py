"""The documents of one batch of a query, with dotted paths and dynamics resolved for all of them at once.

A dotted path costs one batched load per hop, a dynamic one multi-get of its cached values
(:func:`dal.objects.dynamics.read_many`) for every row of the batch that reaches it, never a read per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.backends.base import Entry
from dal.exceptions import BackendError
from dal.objects.decoding import document
from dal.objects.dynamics import read_many
from dal.query.filters import Filter
from dal.query.grammar import Condition, Node, satisfies

if TYPE_CHECKING:
    from dal.config import Context
    from dal.model.meta import HybridMeta
    from dal.objects.dataobject import DataObject
    from dal.structures import Relation


def decode_document(value: bytes, hybrid: str, guid: str) -> dict[str, Any]:
    """Return a stored document decoded, exactly as ``json.loads(value)`` would; BackendError if it is not
    a JSON object. Through :func:`dal.objects.decoding.document` (json's C scanner called directly, no
    encoding detection nor whitespace regex; anything else is ``json.loads``'s own)."""
    try:
        return document(value)
    except ValueError as exc:
        raise BackendError(f"the stored document of {hybrid} {guid} is not a JSON object ({exc}); "
                           "it was not written by dal, or the store is damaged: run `dal check`") from exc


class _Pending(Exception):
    """A row reached a dynamic its batch has not read yet: it waits for the batch to read it."""


class Batch:
    """Documents of one batch, with dotted paths and dynamics resolved for all of them at once."""

    def __init__(self, context: Context, meta: HybridMeta, entries: dict[str, Entry]) -> None:
        self.context = context
        self.meta = meta
        self.entries = entries
        name = meta.cls.__name__
        self.data = {guid: decode_document(entry.value, name, guid) for guid, entry in entries.items()}
        #: per walked path: root guid -> (guid, document) of the object at its end, or None
        self._paths: dict[tuple[Relation, ...], dict[str, tuple[str, dict[str, Any], Entry] | None]] = {}
        #: (hybrid, guid, revision, dynamic) -> its value: a document a path reaches may be newer than its row
        self._dynamics: dict[tuple[str, str, int, str], Any] = {}
        #: per (hybrid, dynamic) not read yet, the documents ((guid, revision) -> entry) rows reached it on
        self._wanted: dict[tuple[str, str], tuple[HybridMeta, dict[tuple[str, int], Entry]]] = {}
        #: the object of each document (of one revision: a path may load a newer one than the row's)
        #: whose dynamics were read: one for all its dynamics
        self._objects: dict[tuple[str, str, int], DataObject] = {}

    def matching(self, test: Filter, guids: list[str]) -> list[str]:
        """Return the ``guids`` whose documents match ``test``, in their order. A row that reaches a
        dynamic not read yet waits, and runs again once it is read for every row that reached it (one
        multi-get, :func:`read_many`): a row reads the dynamics its conditions reach, no other, as alone."""
        matched: set[str] = set()
        waiting = guids
        while waiting:  # a row never waits twice for one dynamic: as many rounds as dynamics, at most
            parked = []
            for guid in waiting:
                try:
                    if test(self, guid):
                        matched.add(guid)
                except _Pending:
                    parked.append(guid)
            wanted, self._wanted, waiting = self._wanted, {}, parked
            for (_, name), (meta, ends) in wanted.items():
                objs = [self._object(meta, guid, entry) for (guid, _), entry in ends.items()]
                to_json = meta.dynamics[name].validator.to_json
                for (guid, revision), value in zip(ends, read_many(objs, meta.dynamics[name]), strict=True):
                    self._dynamics[meta.name, guid, revision, name] = to_json(value)
        return [guid for guid in guids if guid in matched]

    def _object(self, meta: HybridMeta, guid: str, entry: Entry) -> DataObject:
        """Return the object of a document, built once for every dynamic of it the batch reads."""
        key = (meta.name, guid, entry.revision)
        obj = self._objects.get(key)
        if obj is None:
            obj = self._objects[key] = meta.cls._from_entry(guid, entry)
        return obj

    def matches(self, node: Node, guid: str) -> bool:
        assert isinstance(node, Condition)  # compile_filter hands a batch its conditions, never a group
        found = self._end(node.field.hops, guid)
        if found is None:
            return False  # a dotted path through an unset relation matches nothing
        end_guid, document, entry = found
        field = node.field
        if field.kind == "guid":
            value: Any = end_guid
        elif field.kind == "dynamic":
            value = self._dynamic(field.meta, end_guid, entry, field.name)
        else:
            value = document.get(field.name, field.meta.stored_defaults.get(field.name))
        return satisfies(node, value)

    def _end(self, hops: tuple[Relation, ...], guid: str) -> tuple[str, dict[str, Any], Entry] | None:
        if not hops:
            return guid, self.data[guid], self.entries[guid]
        if hops not in self._paths:
            self._resolve(hops)
        return self._paths[hops].get(guid)

    def _resolve(self, hops: tuple[Relation, ...]) -> None:
        """Load the objects at the end of ``hops`` for every document of the batch: one load per hop."""
        relation = hops[-1]
        assert relation.target is not None
        starts = {guid: self._end(hops[:-1], guid) for guid in self.entries}
        wanted = {start[1].get(relation.guid_field) for start in starts.values() if start is not None}
        loaded = self.context.load_documents(relation.target._meta.name,
                                             sorted(guid for guid in wanted if isinstance(guid, str)))
        name = relation.target.__name__
        documents = {guid: (decode_document(entry.value, name, guid), entry)
                     for guid, entry in loaded.items()}
        ends: dict[str, tuple[str, dict[str, Any], Entry] | None] = {}
        for guid, start in starts.items():
            target = start[1].get(relation.guid_field) if start is not None else None
            found = documents.get(target) if target is not None else None
            ends[guid] = None if found is None or target is None else (target, found[0], found[1])
        self._paths[hops] = ends

    def _dynamic(self, meta: HybridMeta, guid: str, entry: Entry, name: str) -> Any:
        key = (meta.name, guid, entry.revision, name)
        if key not in self._dynamics:  # read with every other row's that reached it (see matching)
            self._wanted.setdefault((meta.name, name), (meta, {}))[1][guid, entry.revision] = entry
            raise _Pending
        return self._dynamics[key]
