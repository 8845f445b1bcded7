"""Integrity of a namespace: documents against the model, and every derived key against its document.

A save writes a document and its unique keys, index entries and relation links in one
transaction, so they cannot drift apart through dal. They can through everything else: a
restored backup of part of a store, a hand edit, a model changed under old data, a bug.
:func:`check` reads the whole namespace and reports each disagreement as a
:class:`Problem`; with ``repair=True`` it fixes what is safe to fix, each fix one
conditional commit guarded by the revisions it was derived from, so a writer that changed
the same data meanwhile makes the fix fail instead of being overwritten.

What a document should own is computed exactly as :func:`dal.objects.transaction.plan_write`
computes it from a stored document, so a repaired namespace is what dal itself would have
written. :func:`validate_document` is also what ``dal load`` validates a dump with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeGuard

from pydantic import ValidationError

from dal.backends.base import Check, Delete, Entry, Exists, Op, Put, Revision
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.model.meta import HybridMeta, family, hybrids
from dal.objects.relations import scan_batches
from dal.objects.schema import read_record
from dal.objects.transaction import Document, decode
from dal.structures import GUID_RULE, Relation, Validator, is_guid

# --- one document against the model --------------------------------------------------


@dataclass(frozen=True)
class FieldProblem:
    """One field of one document that does not fit the model."""

    field: str
    message: str


@dataclass
class Validation:
    """A document checked against its hybrid: its normalized form and what is wrong with it."""

    #: every declared field, in declaration order, defaults filled in, values in stored JSON form
    document: Document
    problems: list[FieldProblem]
    #: stored fields the model does not declare
    unknown: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unknown


def valid_guid(value: object) -> TypeGuard[str]:
    """Return whether ``value`` is a guid (:func:`dal.structures.is_guid`: a UUID in canonical form)."""
    return is_guid(value)


def stored_value(validator: Validator, value: Any) -> Any:
    """Return a stored JSON value validated as strictly as an assignment, in stored form.

    Non-native types (``datetime``, ``list[int]``, models) are validated in pydantic's strict
    JSON mode, which takes an ISO string for a datetime but never ``"1"`` for an int.
    Raise InvalidValueError naming ``Class.field``.
    """
    if value is None:
        return None
    if validator.native or validator.adapter is None:
        return validator(value)
    try:
        python = validator.adapter.validate_json(json.dumps(value), strict=True)
    except ValidationError as exc:
        problem = str(exc.errors()[0].get("msg", "invalid value"))
    except (TypeError, ValueError) as exc:  # json.dumps of a value JSON cannot hold
        problem = str(exc)
    else:  # and what an assignment refuses besides: NaN and infinities, values that do not read back
        return validator.to_json(validator(python))
    raise InvalidValueError(f"{validator.owner} must be {validator.label}, not {value!r}: {problem}")


def validate_document(meta: HybridMeta, data: Mapping[str, Any]) -> Validation:
    """Check a stored (or dumped) document against its hybrid, as a save would have.

    A missing property takes its default and a missing relation is unset, as when an
    object stored by an older model is loaded; mandatory fields must then be set.
    """
    name = meta.cls.__name__
    document: Document = {}
    problems: list[FieldProblem] = []
    for prop_name, prop in meta.properties.items():
        if prop_name in data:
            try:
                value = stored_value(prop.validator, data[prop_name])
            except InvalidValueError as exc:
                problems.append(FieldProblem(prop_name, str(exc)))
                continue
        else:
            value = prop.validator.to_json(prop.make_default())
        if value is None and prop.mandatory:
            state = "null" if prop_name in data else "missing"
            problems.append(FieldProblem(prop_name, f"{name}.{prop_name} is mandatory but {state}"))
        document[prop_name] = value
    for relation in meta.relations.values():
        guid_field = relation.guid_field
        target = data.get(guid_field)
        problem = ""
        if target is not None and not valid_guid(target):
            problem = f"{name}.{guid_field} must be a guid or null, not {target!r}: {GUID_RULE}"
        elif target is None and relation.mandatory:
            problem = f"{name}.{guid_field} is mandatory but {'null' if guid_field in data else 'missing'}"
        elif target is not None and relation.target is None:
            problem = (f"{relation.qualified} points at {relation.foreign_type!r}, which is not declared; "
                       "import the module declaring it")
        if problem:
            problems.append(FieldProblem(guid_field, problem))
        document[guid_field] = target
    unknown = sorted(set(data) - meta.field_set)
    return Validation(document, problems, unknown)


# --- the report ------------------------------------------------------------------------


class Kind(str, Enum):
    """What is wrong; the value is the name the report prints."""

    INVALID_DOCUMENT = "invalid_document"  # not JSON, or a field does not fit the model
    UNKNOWN_FIELD = "unknown_field"  # a stored field the model does not declare
    ORPHAN_KEY = "orphan_key"  # a key of a hybrid, field or relation the model does not declare
    DANGLING_RELATION = "dangling_relation"  # <relation>_guid names a target that is not stored
    ONETOONE_VIOLATION = "onetoone_violation"  # several objects point at one target of a one-to-one
    MISSING_LINK = "missing_link"
    STALE_LINK = "stale_link"
    MISSING_INDEX = "missing_index"
    STALE_INDEX = "stale_index"
    MISSING_UNIQUE = "missing_unique"
    STALE_UNIQUE = "stale_unique"  # no document holds the value, or another one than the key names
    DUPLICATE_UNIQUE = "duplicate_unique"  # several documents hold one unique value
    MISSING_ONETOONE = "missing_onetoone"  # a one-to-one referrer without its key: another could point there
    STALE_ONETOONE = "stale_onetoone"  # a one-to-one key naming an object that does not point at its target
    UNBUILT_ONETOONE = "unbuilt_onetoone"  # one-to-one keys of older data that `dal migrate` has not built
    UNBUILT_INDEX = "unbuilt_index"  # index entries the schema record says are not built yet: `dal migrate`
    UNBUILT_UNIQUE = "unbuilt_unique"  # unique keys the schema record says are not built yet: `dal migrate`


#: kinds a repair can fix (when the data did not change meanwhile); the others need a person
REPAIRABLE = frozenset({Kind.MISSING_LINK, Kind.STALE_LINK, Kind.MISSING_INDEX, Kind.STALE_INDEX,
                        Kind.MISSING_UNIQUE, Kind.STALE_UNIQUE, Kind.MISSING_ONETOONE, Kind.STALE_ONETOONE})
#: kinds `dal migrate` fixes: keys a model change asks for that were never built for older data (not
#: damage: the schema record says so, and queries scan meanwhile)
MIGRATE = frozenset({Kind.UNBUILT_INDEX, Kind.UNBUILT_UNIQUE, Kind.UNBUILT_ONETOONE})


@dataclass(frozen=True)
class Fix:
    """The conditional commit that repairs one problem, and the cached query results it may change."""

    checks: tuple[Check, ...]
    ops: tuple[Op, ...]
    #: version keys to drop after the commit: a key that was missing hid an object from queries
    #: answered through it (a stale key never showed a wrong one: candidates are re-verified)
    invalidate: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One disagreement: its kind, the key it concerns, and a sentence saying what and how to fix."""

    kind: Kind
    key: str
    message: str
    hybrid: str = ""
    guid: str = ""
    fix: Fix | None = field(default=None, compare=False, repr=False)


@dataclass
class Report:
    """What :func:`check` found (and, with ``repair``, what it fixed)."""

    namespace: str
    #: documents per hybrid (undeclared hybrids included)
    documents: dict[str, int] = field(default_factory=dict)
    #: unique, index and link keys read
    keys: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: bool = False
    fixed: list[Problem] = field(default_factory=list)
    #: repairable problems whose fix did not commit: the data changed meanwhile
    conflicted: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def remaining(self) -> list[Problem]:
        """Problems still there: all of them, or after a repair those it did not fix."""
        fixed = {id(problem) for problem in self.fixed}
        return [problem for problem in self.problems if id(problem) not in fixed]

    def counts(self) -> dict[Kind, int]:
        """Return the number of problems per kind, in the order of :class:`Kind`."""
        found: dict[Kind, int] = {}
        for problem in self.problems:
            found[problem.kind] = found.get(problem.kind, 0) + 1
        return {kind: found[kind] for kind in Kind if kind in found}

    def of(self, kind: Kind) -> list[Problem]:
        return [problem for problem in self.problems if problem.kind == kind]


# --- the check ---------------------------------------------------------------------------


#: the parts of a check, in order; ``progress`` is told each as it finishes
PHASES = ("documents", "unique keys", "index entries", "links", "one-to-one keys")


def check(context: Context, *, repair: bool = False,
          progress: Callable[[str], None] | None = None) -> Report:
    """Check the namespace of ``context``; with ``repair``, fix what is safe to (see :func:`apply_fixes`).

    ``progress``, if given, is called with each of :data:`PHASES` as it is done, then with
    ``"repair"`` after the fixes.
    """
    report = _Checker(context, progress or (lambda phase: None)).run()
    if repair:
        apply_fixes(context, report)
        if progress is not None:
            progress("repair")
    return report


def apply_fixes(context: Context, report: Report) -> None:
    """Commit the fix of every repairable problem of ``report``, each on its own, conditionally.

    A fix whose data changed since the check (its revision checks fail) writes nothing and
    lands in ``report.conflicted``; the others in ``report.fixed``.
    """
    report.repaired = True
    fixable = [problem for problem in report.problems if problem.fix is not None]
    # stale keys go first, so a value they held is free before a missing key takes it
    fixable.sort(key=_puts_last)
    for problem in fixable:
        assert problem.fix is not None
        result = context.commit(problem.fix.checks, problem.fix.ops, problem.fix.invalidate)
        (report.fixed if result.ok else report.conflicted).append(problem)


def _puts_last(problem: Problem) -> bool:
    return problem.fix is not None and not any(isinstance(op, Delete) for op in problem.fix.ops)


@dataclass(frozen=True)
class _Indexed:
    meta: HybridMeta
    guid: str
    field: str
    value: Any
    #: what reads return (the default when the document lacks the field), and whether it does
    read: Any = None
    lacks: bool = False
    #: whether the schema record lists the index as built
    built: bool = True


def _shown(field: str, value: Any, lacks: bool) -> str:
    """Return ``field=value`` as reads return it, saying when it is the default of a missing field."""
    return f"{field}={value!r}" + (" (the default: its document lacks the field)" if lacks else "")


@dataclass
class _Unbuilt:
    """The objects whose keys of one property are not built yet: how many, and one to name."""

    meta: HybridMeta
    count: int
    guid: str
    value: Any
    lacks: bool


@dataclass(frozen=True)
class _Link:
    meta: HybridMeta
    guid: str
    relation: Relation
    target: str


class _Checker:
    """One pass over documents, then unique keys, index entries, links and one-to-one keys, each in key order.

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
        self.index_entries: dict[str, _Indexed] = {}
        self.links: dict[str, _Link] = {}
        #: (declaring relation, target guid) -> the (hybrid, guid) pointing there: one constraint spans
        #: the subclass hybrids holding the relation too
        self.onetoone: dict[tuple[Relation, str], list[tuple[HybridMeta, str]]] = {}
        #: expected one-to-one key -> the documents that should own it (several: a violation)
        self.onetoone_keys: dict[str, list[_Link]] = {}
        #: one-to-one keys of targets several objects point at: no key is right, a person decides
        self.violated: set[str] = set()
        #: hybrid -> its one-to-one relations whose keys its schema record lists as built
        self.built: dict[str, frozenset[str]] = {}
        #: hybrid -> its (indexed, unique) properties whose keys its schema record lists as built
        self.keys_ready: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        #: expected unique keys of properties whose keys are not built yet
        self.unbuilt_unique: set[str] = set()
        #: (kind, hybrid, property) -> the objects lacking keys not built yet, reported once per property
        self.unbuilt: dict[tuple[Kind, str, str], _Unbuilt] = {}

    def area(self, letter: str) -> str:
        """Return the prefix of one part of the key layout (see dal/keys.py)."""
        return f"{self.keys.root}{letter}/"

    def add(self, kind: Kind, key: str, message: str, hybrid: str = "", guid: str = "",
            fix: Fix | None = None) -> None:
        self.report.problems.append(Problem(kind, key, message, hybrid, guid, fix))

    def scan(self, letter: str) -> Iterator[tuple[str, str, Entry]]:
        prefix = self.area(letter)
        for batch in scan_batches(self.context, prefix):
            for key, entry in batch:
                yield key, key[len(prefix):], entry

    def run(self) -> Report:
        # per pass: the area scanned, what each key is checked for, what is left over after it
        passes: tuple[tuple[str, Callable[[str, str, Entry], None], Callable[[], None]], ...] = (
            ("o", self.document, self.one_to_one), ("u", self.unique_key, self.missing_unique),
            ("i", self.index_key, self.missing_index), ("l", self.link_key, self.missing_links),
            ("r", self.onetoone_key, self.missing_onetoone))
        for (letter, visit, finish), phase in zip(passes, PHASES, strict=True):
            for key, rest, entry in self.scan(letter):
                self.report.keys += letter != "o"  # documents are counted per hybrid instead
                visit(key, rest, entry)
            finish()
            self.progress(phase)
        return self.report

    def versions(self, hybrid: str, field: str, value: Any) -> tuple[str, ...]:
        """Return the version keys of cached query results that depend on ``field`` holding ``value``."""
        return self.keys.field_version(hybrid, field), self.keys.value_version(hybrid, field, value)

    def doc_revision(self, hybrid: str, guid: str) -> Revision:
        """Return a check that the document is as this pass saw it (absent: revision 0)."""
        return Revision(self.keys.doc(hybrid, guid), self.docs.get((hybrid, guid), 0))

    # --- documents --------------------------------------------------------------------

    def document(self, key: str, rest: str, entry: Entry) -> None:
        hybrid, _, guid = rest.partition("/")
        counts = self.report.documents
        counts[hybrid] = counts.get(hybrid, 0) + 1
        meta = self.metas.get(hybrid)
        if meta is None or not guid:
            self.add(Kind.ORPHAN_KEY, key, f"document of undeclared hybrid {hybrid!r}: pass the module "
                     "declaring it with --hybrids, or delete the data", hybrid, guid)
            return
        self.docs[hybrid, guid] = entry.revision
        label = f"{meta.cls.__name__} {guid}"
        try:
            document = decode(entry.value)
        except ValueError as exc:  # includes bad UTF-8 and JSON
            self.unreadable.add((hybrid, guid))
            self.add(Kind.INVALID_DOCUMENT, key, f"{label}: the stored document is not a JSON object "
                     f"({exc}); its keys are left alone; restore it from a dump or delete the object",
                     hybrid, guid)
            return
        validation = validate_document(meta, document)
        if validation.problems:
            wrong = "; ".join(problem.message for problem in validation.problems)
            self.add(Kind.INVALID_DOCUMENT, key, f"{label}: {wrong}; correct the values (load and save the "
                     "object) or migrate the data", hybrid, guid)
        if validation.unknown:
            self.add(Kind.UNKNOWN_FIELD, key, f"{label} stores {', '.join(validation.unknown)}, which "
                     f"{meta.cls.__name__} does not declare (written by another version of the model?)",
                     hybrid, guid)
        self.expect(meta, guid, document, validation.document)

    def expect(self, meta: HybridMeta, guid: str, document: Document, read: Document) -> None:
        """Record the keys ``document`` owns, exactly as plan_write derives them.

        ``read`` is the document as reads see it (defaults filled in). Keys the schema record does
        not list as built are expected as `dal migrate` builds them: from the values reads return.
        """
        keys = self.keys
        indexed_built, unique_built = self.keys_built(meta)
        for prop in meta.unique:
            built = prop.name in unique_built
            value = document.get(prop.name) if built else read.get(prop.name)
            if value is not None:
                unique_key = keys.unique(meta.name, prop.name, value)
                self.unique_holders.setdefault(unique_key, []).append(guid)
                self.unique_values[unique_key] = (meta, prop.name, value)
                if not built:
                    self.unbuilt_unique.add(unique_key)
        for prop in meta.indexed:
            built = prop.name in indexed_built
            value = document.get(prop.name) if built else read.get(prop.name)
            entry = _Indexed(meta, guid, prop.name, value, read.get(prop.name), prop.name not in document,
                             built)
            self.index_entries[keys.index(meta.name, prop.name, value, guid)] = entry
        for relation in meta.relations.values():
            target = document.get(relation.guid_field)
            if relation.target is None or not valid_guid(target):
                continue
            link = keys.link(relation.target._meta.name, target, meta.name, relation.name, guid)
            self.links[link] = _Link(meta, guid, relation, target)
            if relation.onetoone:
                self.onetoone.setdefault((family(relation)[0], target), []).append((meta, guid))
                self.onetoone_keys.setdefault(keys.onetoone(meta.name, relation.name, target), []).append(
                    self.links[link])

    def one_to_one(self) -> None:
        for (relation, target), sources in self.onetoone.items():
            if len(sources) > 1:
                assert relation.owner is not None and relation.target is not None
                several = len({meta.name for meta, _ in sources}) > 1  # subclass hybrids among them
                named = [f"{meta.cls.__name__} {guid}" if several else guid for meta, guid in sources]
                self.violated.update(self.keys.onetoone(member.owner._meta.name, member.name, target)
                                     for member in family(relation) if member.owner is not None)
                self.add(Kind.ONETOONE_VIOLATION, self.keys.doc(relation.target._meta.name, target),
                         f"{relation.qualified} is one-to-one, but {len(sources)} objects point at "
                         f"{relation.target.__name__} {target}: {', '.join(named)}; unlink all but one",
                         relation.target._meta.name, target)

    # --- unique keys --------------------------------------------------------------------

    def unique_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 2)
        meta = self.metas.get(parts[0])
        prop = meta.properties.get(parts[1]) if meta is not None and len(parts) == 3 else None
        if meta is None or prop is None or not prop.unique:
            self.add(Kind.ORPHAN_KEY, key, "unique key of an undeclared hybrid or of a property that is not "
                     "unique: pass the module declaring it with --hybrids, or delete the key", parts[0])
            return
        owner = entry.value.decode(errors="replace")
        holders = self.unique_holders.pop(key, None)
        values = self.unique_values.pop(key, None)
        name = meta.cls.__name__
        if holders is None:
            if (meta.name, owner) in self.unreadable:
                return  # its owner's document cannot be read: it may well hold the value
            self.add(Kind.STALE_UNIQUE, key, f"unique key {name}.{prop.name} names {owner}, but no {name} "
                     "holds that value; it blocks the value for everyone", meta.name, owner,
                     Fix((Revision(key, entry.revision), self.doc_revision(meta.name, owner)),
                         (Delete(key),)))
        elif len(holders) > 1:
            assert values is not None
            self.duplicate(key, values, holders)
        elif holders[0] != owner:
            holder = holders[0]
            assert values is not None
            fix = None if (meta.name, owner) in self.unreadable else Fix(
                (Revision(key, entry.revision), self.doc_revision(meta.name, holder),
                 self.doc_revision(meta.name, owner)), (Put(key, holder.encode()),),
                self.versions(meta.name, prop.name, values[2]))
            self.add(Kind.STALE_UNIQUE, key, f"unique key {name}.{prop.name} names {owner}, but {name} "
                     f"{holder} holds that value", meta.name, holder, fix)

    def duplicate(self, key: str, values: tuple[HybridMeta, str, Any], holders: list[str]) -> None:
        meta, prop_name, value = values
        name = meta.cls.__name__
        self.add(Kind.DUPLICATE_UNIQUE, key, f"{name}.{prop_name} must be unique, but {len(holders)} objects "
                 f"hold {value!r}: {', '.join(holders)}; change all but one", meta.name, holders[0])

    def missing_unique(self) -> None:
        for key, holders in self.unique_holders.items():
            meta, prop_name, value = self.unique_values[key]
            if len(holders) > 1:
                self.duplicate(key, (meta, prop_name, value), holders)
                continue
            guid = holders[0]
            if key in self.unbuilt_unique:
                self.note_unbuilt(Kind.UNBUILT_UNIQUE, meta, prop_name, guid, value, False)
                continue
            self.add(Kind.MISSING_UNIQUE, key, f"{meta.cls.__name__} {guid} holds {prop_name}={value!r}, but "
                     "its unique key is missing, so another object could take the value", meta.name, guid,
                     Fix((Revision(key, 0), self.doc_revision(meta.name, guid)), (Put(key, guid.encode()),),
                         self.versions(meta.name, prop_name, value)))
        self.unique_holders.clear()
        self.unique_values.clear()
        self.unbuilt_unique.clear()
        self.report_unbuilt(Kind.UNBUILT_UNIQUE)

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
            self.unbuilt[kind, meta.name, name] = _Unbuilt(meta, 1, guid, value, lacks)
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
                       f"{_shown(prop, noted.value, noted.lacks)}")
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

    # --- index entries ------------------------------------------------------------------

    def index_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 3)
        meta = self.metas.get(parts[0])
        prop = meta.properties.get(parts[1]) if meta is not None and len(parts) == 4 else None
        if meta is None or prop is None or not prop.indexed:
            self.add(Kind.ORPHAN_KEY, key, "index entry of an undeclared hybrid or of a property that is not "
                     "indexed: pass the module declaring it with --hybrids, or delete the key", parts[0])
            return
        if self.index_entries.pop(key, None) is not None:
            return
        guid = parts[3]
        if (meta.name, guid) in self.unreadable:
            return
        state = "stores another value" if (meta.name, guid) in self.docs else "is not stored"
        self.add(Kind.STALE_INDEX, key, f"index entry of {meta.cls.__name__}.{prop.name} for {guid}, which "
                 f"{state}; queries would find the wrong object", meta.name, guid,
                 Fix((Revision(key, entry.revision), self.doc_revision(meta.name, guid)), (Delete(key),)))

    def missing_index(self) -> None:
        for key, indexed in self.index_entries.items():
            meta = indexed.meta
            if not indexed.built:
                self.note_unbuilt(Kind.UNBUILT_INDEX, meta, indexed.field, indexed.guid, indexed.read,
                                  indexed.lacks)
                continue
            fix = Fix((self.doc_revision(meta.name, indexed.guid),), (Put(key, b""),),
                      self.versions(meta.name, indexed.field, indexed.value))
            self.add(Kind.MISSING_INDEX, key, f"{meta.cls.__name__} {indexed.guid} reads "
                     f"{_shown(indexed.field, indexed.read, indexed.lacks)}, but its index entry is missing; "
                     "queries would miss it", meta.name, indexed.guid, fix)
        self.index_entries.clear()
        self.report_unbuilt(Kind.UNBUILT_INDEX)

    # --- links --------------------------------------------------------------------------

    def link_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 4)
        source = self.metas.get(parts[2]) if len(parts) == 5 else None
        relation = source.relations.get(parts[3]) if source is not None else None
        if source is None or relation is None or relation.target is None \
                or relation.target._meta.name != parts[0]:
            self.add(Kind.ORPHAN_KEY, key, "link of an undeclared hybrid or relation: pass the module "
                     "declaring it with --hybrids, or delete the key", parts[0])
            return
        target, target_guid, source_guid = parts[0], parts[1], parts[4]
        expected = self.links.pop(key, None)
        if expected is not None:
            self.dangling(expected)
            return
        if (source.name, source_guid) in self.unreadable:
            return
        name = source.cls.__name__
        state = (f"{name} {source_guid}.{relation.name} points elsewhere"
                 if (source.name, source_guid) in self.docs else f"{name} {source_guid} is not stored")
        checks = (Revision(key, entry.revision), self.doc_revision(source.name, source_guid))
        self.add(Kind.STALE_LINK, key, f"link from {name}.{relation.name} to {relation.target.__name__} "
                 f"{target_guid}, but {state}; reverse lists would show a wrong object", target, target_guid,
                 Fix(checks, (Delete(key),)))

    def dangling(self, link: _Link) -> bool:
        """Report a relation whose target is not stored; return whether it was."""
        relation = link.relation
        assert relation.target is not None
        target = relation.target._meta.name
        if (target, link.target) in self.docs:
            return False
        self.add(Kind.DANGLING_RELATION, self.keys.doc(link.meta.name, link.guid),
                 f"{relation.qualified} of {link.guid} points at {relation.target.__name__} {link.target}, "
                 "which is not stored; relink the object or delete it", link.meta.name, link.guid)
        return True

    # --- one-to-one keys ----------------------------------------------------------------

    def onetoone_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 2)
        meta = self.metas.get(parts[0])
        relation = meta.relations.get(parts[1]) if meta is not None and len(parts) == 3 else None
        if meta is None or relation is None or not relation.onetoone or relation.target is None:
            self.add(Kind.ORPHAN_KEY, key, "one-to-one key of an undeclared hybrid or of a relation that "
                     "is not one-to-one: pass the module declaring it with --hybrids, or delete the key",
                     parts[0])
            return
        target, owner = f"{relation.target.__name__} {parts[2]}", entry.value.decode(errors="replace")
        holders = self.onetoone_keys.pop(key, None)
        if key in self.violated or (meta.name, owner) in self.unreadable:
            return  # several objects point there (reported above), or its owner cannot be read
        name = meta.cls.__name__
        if holders is None:
            state = "points elsewhere" if (meta.name, owner) in self.docs else "is not stored"
            self.add(Kind.STALE_ONETOONE, key, f"one-to-one key of {relation.qualified} for {target} names "
                     f"{name} {owner}, which {state}; it keeps every other object from pointing there",
                     meta.name, owner,
                     Fix((Revision(key, entry.revision), self.doc_revision(meta.name, owner)),
                         (Delete(key),)))
        elif holders[0].guid != owner:
            holder = holders[0].guid
            self.add(Kind.STALE_ONETOONE, key, f"one-to-one key of {relation.qualified} for {target} names "
                     f"{owner}, but {name} {holder} is the one pointing there", meta.name, holder,
                     Fix((Revision(key, entry.revision), self.doc_revision(meta.name, holder),
                          self.doc_revision(meta.name, owner)), (Put(key, holder.encode()),)))

    def missing_onetoone(self) -> None:
        unbuilt: dict[tuple[str, str], list[_Link]] = {}
        for key, holders in self.onetoone_keys.items():
            link = holders[0]
            relation = link.relation
            assert relation.target is not None
            if key in self.violated or (relation.target._meta.name, link.target) not in self.docs:
                continue  # several point there, or the target is gone: the relation needs a person
            if relation.name not in self.onetoone_built(link.meta):
                unbuilt.setdefault((link.meta.name, relation.name), []).append(link)
                continue
            self.add(Kind.MISSING_ONETOONE, key, f"{relation.qualified} of {link.guid} points at "
                     f"{relation.target.__name__} {link.target}, but its one-to-one key is missing, so "
                     "another object could point there too", link.meta.name, link.guid,
                     Fix((Revision(key, 0), self.doc_revision(link.meta.name, link.guid),
                          Exists(self.keys.doc(relation.target._meta.name, link.target))),
                         (Put(key, link.guid.encode()),)))
        for links in unbuilt.values():  # one problem per relation, not per object
            count, first = len(links), links[0]
            meta, relation = first.meta, first.relation
            assert relation.target is not None
            self.add(Kind.UNBUILT_ONETOONE, self.keys.onetoones(meta.name, relation.name),
                     f"{relation.qualified} is one-to-one, but its keys are not built yet: {count} "
                     f"object{'s' * (count != 1)} stored before they existed have none, e.g. "
                     f"{meta.cls.__name__} {first.guid}, which points at {relation.target.__name__} "
                     f"{first.target}; saves check the links instead until `dal migrate` builds them",
                     meta.name, first.guid)
        self.onetoone_keys.clear()

    def onetoone_built(self, meta: HybridMeta) -> frozenset[str]:
        """Return the one-to-one relations of ``meta`` whose keys its schema record lists as built."""
        built = self.built.get(meta.name)
        if built is None:
            record = read_record(self.context, meta.name)
            built = self.built[meta.name] = frozenset() if record is None else record.onetoone_ready_for(meta)
        return built

    def missing_links(self) -> None:
        for key, link in self.links.items():
            if self.dangling(link):
                continue  # a link to nothing would not help: the relation itself needs a person
            relation = link.relation
            assert relation.target is not None
            self.add(Kind.MISSING_LINK, key, f"{relation.qualified} of {link.guid} points at "
                     f"{relation.target.__name__} {link.target}, but the link is missing; "
                     f"{relation.target.__name__}.{relation.foreign_key} would not list it",
                     link.meta.name, link.guid,
                     Fix((self.doc_revision(link.meta.name, link.guid),
                          Exists(self.keys.doc(relation.target._meta.name, link.target))), (Put(key, b""),),
                         self.versions(link.meta.name, relation.guid_field, link.target)))
        self.links.clear()
