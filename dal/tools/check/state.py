"""What a check holds while it reads a namespace: the documents seen, the keys they should own.

:class:`CheckState` is shared by the pass over documents (:mod:`dal.tools.check.documents`)
and the passes over derived keys (:mod:`dal.tools.check.derived`): the documents pass fills
in what each document should own, the key passes tick it off as they read the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dal.backends.base import Entry, Revision
from dal.backends.paging import scan_batches
from dal.config import Context
from dal.model.meta import HybridMeta
from dal.model.registry import hybrids
from dal.objects.schema import read_record
from dal.structures import Relation
from dal.tools.check.problems import Fix, Kind, Problem, Report


@dataclass(frozen=True)
class Indexed:
    """The index entry one document should own: of which property, for which value."""

    meta: HybridMeta
    guid: str
    field: str
    value: Any
    #: what reads return (the default when the document lacks the field), and whether it does
    read: Any = None
    lacks: bool = False
    #: whether the schema record lists the index as built
    built: bool = True


def shown(field: str, value: Any, lacks: bool) -> str:
    """Return ``field=value`` as reads return it, saying when it is the default of a missing field."""
    return f"{field}={value!r}" + (" (the default: its document lacks the field)" if lacks else "")


@dataclass
class Unbuilt:
    """The objects whose keys of one property are not built yet: how many, and one to name."""

    meta: HybridMeta
    count: int
    guid: str
    value: Any
    lacks: bool


@dataclass(frozen=True)
class Link:
    """The link one document's relation should own, to the target it names."""

    meta: HybridMeta
    guid: str
    relation: Relation
    target: str


class CheckState:
    """The state of one check: what was read so far and what the documents should own.

    What the documents should own is held in memory (one entry per expected key) and
    ticked off as the keys are read; what is left over is missing.
    """

    def __init__(self, context: Context, progress: Callable[[str], None]) -> None:
        self.context = context
        self.progress = progress
        self.keys = context.keys
        self.metas = {cls._meta.name: cls._meta for cls in hybrids.all()}
        self.report = Report(context.namespace)
        #: (hybrid, guid) -> revision of every stored document
        self.docs: dict[tuple[str, str], int] = {}
        #: documents that could not be read: keys naming them are neither stale nor missing
        self.unreadable: set[tuple[str, str]] = set()
        self.unique_holders: dict[str, list[str]] = {}
        self.unique_values: dict[str, tuple[HybridMeta, str, Any]] = {}
        self.index_entries: dict[str, Indexed] = {}
        self.links: dict[str, Link] = {}
        #: (declaring relation, target guid) -> the (hybrid, guid) pointing there: one constraint spans
        #: the subclass hybrids holding the relation too
        self.onetoone: dict[tuple[Relation, str], list[tuple[HybridMeta, str]]] = {}
        #: expected one-to-one key -> the documents that should own it (several: a violation)
        self.onetoone_keys: dict[str, list[Link]] = {}
        #: one-to-one keys of targets several objects point at: no key is right, a person decides
        self.violated: set[str] = set()
        #: hybrid -> its one-to-one relations whose keys its schema record lists as built
        self.built: dict[str, frozenset[str]] = {}
        #: hybrid -> its (indexed, unique) properties whose keys its schema record lists as built
        self.keys_ready: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        #: expected unique keys of properties whose keys are not built yet
        self.unbuilt_unique: set[str] = set()
        #: (kind, hybrid, property) -> the objects lacking keys not built yet, reported once per property
        self.unbuilt: dict[tuple[Kind, str, str], Unbuilt] = {}

    def area(self, letter: str) -> str:
        """Return the prefix of one part of the key layout (see dal/keys.py)."""
        return f"{self.keys.root}{letter}/"

    def add(self, kind: Kind, key: str, message: str, hybrid: str = "", guid: str = "",
            fix: Fix | None = None) -> None:
        self.report.problems.append(Problem(kind, key, message, hybrid, guid, fix))

    def scan(self, letter: str) -> Iterator[tuple[str, str, Entry]]:
        return self.scan_under(self.area(letter))

    def scan_under(self, prefix: str) -> Iterator[tuple[str, str, Entry]]:
        """Yield (key, the key after ``prefix``, entry) of every key under ``prefix``, in batches."""
        for batch in scan_batches(self.context.persistent, prefix):
            for key, entry in batch:
                yield key, key[len(prefix):], entry

    def versions(self, hybrid: str, field: str, value: Any) -> tuple[str, ...]:
        """Return the version keys of cached query results that depend on ``field`` holding ``value``."""
        return self.keys.field_version(hybrid, field), self.keys.value_version(hybrid, field, value)

    def doc_revision(self, hybrid: str, guid: str) -> Revision:
        """Return a check that the document is as this pass saw it (absent: revision 0)."""
        return Revision(self.keys.doc(hybrid, guid), self.docs.get((hybrid, guid), 0))

    def keys_built(self, meta: HybridMeta) -> tuple[frozenset[str], frozenset[str]]:
        """Return the (indexed, unique) properties of ``meta`` whose keys its schema record lists as built.

        A property that became indexed or unique after documents were stored has no keys for them
        until `dal migrate` builds them; meanwhile queries scan instead of trusting its keys.
        """
        ready = self.keys_ready.get(meta.name)
        if ready is None:
            record = read_record(self.context, meta.name)
            ready = (frozenset(), frozenset()) if record is None else (record.indexed, record.unique)
            self.keys_ready[meta.name] = ready
        return ready

    def note_unbuilt(self, kind: Kind, meta: HybridMeta, name: str, guid: str, value: Any,
                     lacks: bool) -> None:
        """Count an object whose key of property ``name`` is not built yet; keep one to name in the report.

        The one kept lacks the field, when any does: its value is the default reads return.
        """
        noted = self.unbuilt.get((kind, meta.name, name))
        if noted is None:
            self.unbuilt[kind, meta.name, name] = Unbuilt(meta, 1, guid, value, lacks)
            return
        noted.count += 1
        if lacks and not noted.lacks:
            noted.guid, noted.value, noted.lacks = guid, value, lacks

    def report_unbuilt(self, kind: Kind) -> None:
        """Report, once per property, the keys of ``kind`` the schema record says are not built yet."""
        for (noted_kind, hybrid, prop), noted in list(self.unbuilt.items()):
            if noted_kind is not kind:
                continue
            del self.unbuilt[noted_kind, hybrid, prop]
            name = noted.meta.cls.__name__
            objects = f"{noted.count} object{'s' * (noted.count != 1)} stored before it"
            example = (f"e.g. {name} {noted.guid}, which reads "
                       f"{shown(prop, noted.value, noted.lacks)}")
            if kind is Kind.UNBUILT_INDEX:
                self.add(kind, f"{self.keys.index_fields(hybrid)}{prop}/",
                         f"{name}.{prop} is indexed, but its index is not built yet: {objects} became "
                         f"indexed have no entry, {example}; queries scan instead until `dal migrate` "
                         "builds it", hybrid, noted.guid)
            else:
                self.add(kind, f"{self.keys.unique_fields(hybrid)}{prop}/",
                         f"{name}.{prop} is unique, but its unique keys are not built yet: {objects} became "
                         f"unique have none, {example}; another object could take such a value until "
                         "`dal migrate` builds them", hybrid, noted.guid)

    def onetoone_built(self, meta: HybridMeta) -> frozenset[str]:
        """Return the one-to-one relations of ``meta`` whose keys its schema record lists as built."""
        built = self.built.get(meta.name)
        if built is None:
            record = read_record(self.context, meta.name)
            built = self.built[meta.name] = frozenset() if record is None else record.onetoone_ready_for(meta)
        return built
