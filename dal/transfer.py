"""Dump, load and copy the objects of a namespace.

A dump is one JSON document holding every object's stored document (relations as
``<relation>_guid``), by logical hybrid name, then guid::

    {"format": "dal-dump", "version": 1, "namespace": "dal",
     "hybrids": {"backend": [{"guid": "...", "data": {...}}, ...], ...},
     "counts": {"backend": 2, ...}}

It is written while the documents are scanned, one batch at a time, so a dump never holds
the namespace in memory. It is not a snapshot: on a store that others write to meanwhile,
each document is as it was when its batch was read.

A load reads the whole dump and validates all of it before it writes anything: the format,
every document against the declared model (the same validators an assignment runs), unique
values within the dump and against the store, existing guids, and relation targets that
are neither in the dump nor stored. Then it writes in batches, each batch ONE commit holding
its objects' documents with every unique key, index entry and link, planned by
:func:`dal.transaction.plan_write` exactly as a save plans them. A failed batch writes
nothing; the batches before it stay written (each complete), and the same load run again
with ``replace`` finishes the job.

Why batches go in dependency order: a commit checks that every object it links to exists,
and stores evaluate checks against the state before the commit, so a target written by the
same commit would fail its own existence check. Load therefore groups objects into the
strongly connected components of the "points at" graph and writes those in topological
order, targets first, never splitting a component (a self relation or a cycle) between
commits. Inside one commit it drops the existence check of a target that same commit
writes: the commit makes target and link appear together, atomically, which is what the
check protects. Targets outside the dump keep their check, so a concurrent delete of one
fails the batch instead of leaving a dangling link. Writing documents first and their
relations in a second pass was rejected: between the passes, readers would see objects
without their (possibly mandatory) relations.

:func:`copy` is :func:`read_store` (the dump's scan) fed to :func:`load`: documents are
re-validated and keys rebuilt on the destination, never copied raw, so a copy cannot carry
the source's stale index entries or links along, and a destination with another key
encoding or layout version would still be written correctly.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from dal.backends.base import Delete, Entry, Exists, Put
from dal.config import Context, store_digest
from dal.exceptions import (
    BackendError,
    DalError,
    InvalidValueError,
    ObjectNotFoundError,
    RaceConditionError,
    UniqueConstraintError,
)
from dal.integrity import valid_guid, validate_document
from dal.keys import Keys
from dal.meta import HybridMeta, hybrids
from dal.relations import scan_batches
from dal.results import changed_versions
from dal.schema import ensure_recorded
from dal.transaction import Document, Reason, decode, plan_write

FORMAT = "dal-dump"
VERSION = 1
#: objects per commit
BATCH_SIZE = 100
#: operations, and separately checks, per commit: etcd refuses more by default (its --max-txn-ops)
MAX_TXN_OPS = 128
#: bytes written per commit, under etcd's default request limit of 1.5 MiB
MAX_BATCH_BYTES = 1 << 20
#: documents or keys read per round trip
READ_BATCH = 500
#: commits tried for one --replace batch while other writers keep changing its objects
MAX_ATTEMPTS = 5
#: problems listed in one error message
MAX_LISTED = 20

Advance = Callable[[int], None]


@dataclass
class Dump:
    """A dump in memory: ``(guid, data)`` pairs by logical hybrid name, as read, not yet validated."""

    namespace: str
    hybrids: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(records) for name, records in sorted(self.hybrids.items())}

    @property
    def total(self) -> int:
        return sum(len(records) for records in self.hybrids.values())

    def select(self, metas: Sequence[HybridMeta] | None) -> Dump:
        """Return the part of this dump holding the given hybrids (all for ``None``)."""
        if metas is None:
            return self
        return Dump(self.namespace, {meta.name: self.hybrids.get(meta.name, []) for meta in metas})


@dataclass
class LoadResult:
    """What a load wrote: objects per hybrid, commits, and how many replaced stored ones."""

    counts: dict[str, int]
    batches: int
    replaced: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class CopyResult:
    """What a copy wrote, and the objects per hybrid it then counted on each side."""

    load: LoadResult
    source: dict[str, int]
    destination: dict[str, int]

    @property
    def mismatches(self) -> dict[str, tuple[int, int]]:
        """Return ``{hybrid: (source count, destination count)}`` where they differ."""
        names = sorted(set(self.source) | set(self.destination))
        return {name: (self.source.get(name, 0), self.destination.get(name, 0)) for name in names
                if self.source.get(name, 0) != self.destination.get(name, 0)}


def select_hybrids(names: Iterable[str] | None) -> list[HybridMeta] | None:
    """Return the hybrids named by class or logical name, sorted by logical name (``None``: all)."""
    if names is None:
        return None
    chosen: dict[str, HybridMeta] = {}
    for name in (part.strip() for part in names):
        if not name:
            continue
        try:
            meta = hybrids.get(name)._meta
        except LookupError as exc:
            raise InvalidValueError(
                f"cannot select hybrid {name!r}: {exc.args[0]}; name hybrids by class (Backend) or logical "
                "name (backend), or declare them with --hybrids") from None
        chosen[meta.name] = meta
    if not chosen:
        raise InvalidValueError("no hybrid selected; name at least one, e.g. --only Backend,BackendType")
    return [chosen[name] for name in sorted(chosen)]


# --- reading a namespace ---------------------------------------------------------------


Group = tuple[str, Iterator[tuple[str, Document]]]


def read_documents(context: Context, only: Sequence[HybridMeta] | None = None) -> Iterator[Group]:
    """Yield ``(hybrid, documents)`` by hybrid name, each group ``(guid, document)`` in guid order.

    Documents are read in batches. Without ``only``, every document of the namespace is
    read, undeclared hybrids included (a load then says what to do about them). Consume
    each group before asking for the next.
    """
    if only is not None:
        for meta in only:
            prefix = context.keys.docs(meta.name)
            yield meta.name, _guids(prefix, _scan(context, prefix))
        return
    prefix = f"{context.keys.root}o/"
    # keys sort by hybrid name first: '/' sorts before every character a name may hold
    groups = itertools.groupby(_scan(context, prefix), key=lambda item: _hybrid_of(prefix, item[0]))
    for hybrid, group in groups:
        yield hybrid, _guids(f"{prefix}{hybrid}/", group)


def _hybrid_of(prefix: str, key: str) -> str:
    return key[len(prefix):].partition("/")[0]


def _guids(prefix: str, group: Iterable[tuple[str, Entry]]) -> Iterator[tuple[str, Document]]:
    for key, entry in group:
        yield key[len(prefix):], _document(key, entry)


def read_store(context: Context, only: Sequence[HybridMeta] | None = None) -> Dump:
    """Read the documents of a namespace into a :class:`Dump` (what :func:`copy` loads)."""
    groups = read_documents(context, only)
    return Dump(context.namespace, {name: list(documents) for name, documents in groups})


def count_documents(context: Context, names: Iterable[str]) -> dict[str, int]:
    """Return the number of stored documents of each named hybrid."""
    return {name: sum(len(batch) for batch in scan_batches(context, context.keys.docs(name), READ_BATCH))
            for name in names}


def _scan(context: Context, prefix: str) -> Iterator[tuple[str, Entry]]:
    for batch in scan_batches(context, prefix, READ_BATCH):
        yield from batch


def _document(key: str, entry: Entry) -> Document:
    try:
        return decode(entry.value)
    except ValueError as exc:
        raise BackendError(f"the stored document {key} is not a JSON object ({exc}); it was not written by "
                           "dal or the store is damaged: run `dal check`") from exc


# --- writing and reading dumps -----------------------------------------------------------


def dump(context: Context, out: IO[str], only: Sequence[HybridMeta] | None = None) -> dict[str, int]:
    """Write the namespace of ``context`` to ``out`` as a dump; return the objects per hybrid."""
    return write_dump(out, context.namespace, read_documents(context, only))


def write_dump(out: IO[str], namespace: str,
               groups: Iterable[tuple[str, Iterable[tuple[str, Document]]]]) -> dict[str, int]:
    """Write groups of documents as a dump, one object per line; return the objects per hybrid."""
    counts: dict[str, int] = {}
    out.write(f'{{"format": "{FORMAT}", "version": {VERSION}, "namespace": {json.dumps(namespace)}, '
              '"hybrids": {')
    for number, (hybrid, documents) in enumerate(groups):
        out.write(f'{"," if number else ""}\n{json.dumps(hybrid)}: [')
        count = 0
        for guid, document in documents:
            data = _json(hybrid, guid, document)
            out.write(f'{"," if count else ""}\n{{"guid": {json.dumps(guid)}, "data": {data}}}')
            count += 1
        out.write("\n]")
        counts[hybrid] = count
    out.write(f'}},\n"counts": {json.dumps(counts, sort_keys=True)}}}\n')
    return counts


def _json(hybrid: str, guid: str, document: Document) -> str:
    try:
        return json.dumps(document, sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise BackendError(f"the stored document of {hybrid} {guid} holds a value JSON cannot hold ({exc}); "
                           "run `dal check`") from exc


def read_dump(stream: IO[str], source: str = "the dump") -> Dump:
    """Parse a dump and check its shape (not yet the model: :func:`load` does that)."""
    try:
        raw = json.load(stream)
    except json.JSONDecodeError as exc:
        raise InvalidValueError(f"{source} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                                "give a file written by `dal dump`") from None
    except UnicodeDecodeError as exc:
        raise InvalidValueError(f"{source} is not UTF-8 text ({exc}); give a file written by `dal dump`"
                                ) from None
    return parse_dump(raw, source)


def parse_dump(raw: Any, source: str = "the dump") -> Dump:
    """Check the shape of a parsed dump and return it; raise InvalidValueError listing what is wrong."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InvalidValueError(f'{source} is not a dal dump (it lacks "format": "{FORMAT}"); give a file '
                                "written by `dal dump`")
    version = raw.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        raise InvalidValueError(
            f"{source} is a version {version!r} dump, but this dal reads version {VERSION}; "
            + ("upgrade dal, or dump again with this one" if newer else "dump it again with `dal dump`"))
    problems: list[str] = []
    unknown = sorted(set(raw) - {"format", "version", "namespace", "hybrids", "counts"})
    if unknown:
        problems.append(f"unknown top-level key(s) {', '.join(map(repr, unknown))}")
    namespace = raw.get("namespace")
    if not isinstance(namespace, str):
        problems.append(f'"namespace" must be a string, not {namespace!r}')
    groups = raw.get("hybrids")
    dump = Dump(namespace if isinstance(namespace, str) else "")
    if not isinstance(groups, dict):
        problems.append('"hybrids" must be an object: {"hybrid name": [{"guid": ..., "data": {...}}, ...]}')
        groups = {}
    for name, records in groups.items():
        if not isinstance(records, list):
            problems.append(f"hybrids.{name} must be a list of objects, not {type(records).__name__}")
            continue
        dump.hybrids[name] = _records(name, records, problems)
    counts = raw.get("counts")
    if counts is not None and counts != dump.counts():
        problems.append(f'"counts" says {counts!r}, but the file holds {dump.counts()!r}: it was truncated '
                        'or edited; dump again, or remove "counts" if the edit was deliberate')
    if problems:
        raise InvalidValueError(_listing(
            f"{source} is not a valid dal dump", problems,
            'write it with `dal dump`; its format is in the README ("Dump, load, copy and check")'))
    return dump


def _records(name: str, records: list[Any], problems: list[str]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for position, record in enumerate(records):
        where = f"hybrids.{name}[{position}]"
        if not isinstance(record, dict) or set(record) != {"guid", "data"}:
            problems.append(f'{where} must be {{"guid": "...", "data": {{...}}}}, not {_short(record)}')
            continue
        guid, data = record["guid"], record["data"]
        if not valid_guid(guid):
            problems.append(f"{where}: guid {guid!r} must be a non-empty string without '/'")
        elif guid in seen:
            problems.append(f"{where}: guid {guid} appears twice in {name}")
        elif not isinstance(data, dict):
            problems.append(f"{where} ({guid}): data must be an object, not {_short(data)}")
        else:
            seen.add(guid)
            found.append((guid, data))
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _listing(headline: str, problems: list[str], advice: str) -> str:
    shown = "\n".join(f"  {problem}" for problem in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{headline} ({len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was written):\n" \
           f"{shown}{more}\n{advice}"


# --- loading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """One validated object to write."""

    meta: HybridMeta
    guid: str
    document: Document
    doc_key: str

    @property
    def label(self) -> str:
        return f"{self.meta.cls.__name__} {self.guid}"


def load(context: Context, dump: Dump, *, replace: bool = False, batch_size: int = BATCH_SIZE,
         max_ops: int = MAX_TXN_OPS, progress: Advance | None = None, source: str = "the dump") -> LoadResult:
    """Validate all of ``dump``, then write it into the namespace of ``context`` in atomic batches.

    An object whose guid is already stored is refused (DalError, before anything is written)
    unless ``replace``: then it is overwritten, guarded by the revision it was read at, and
    its old unique keys, index entries and links are removed in the same commit. Objects not
    in the dump are never touched. ``progress`` is called with the objects of each written
    batch.
    """
    if batch_size < 1 or max_ops < 1:
        raise InvalidValueError(f"batch size and operations per commit must be at least 1, not {batch_size} "
                                f"and {max_ops}")
    items = _validate(context.keys, dump, source)
    unique = _unique_within(context.keys, items, source)
    _preflight(context, items, unique, replace, source)
    batches = _batches(context.keys, items, replace, batch_size, max_ops)
    for meta in {item.meta.name: item.meta for item in items}.values():
        # as a save does: into an empty hybrid, every key written is every key there is
        ensure_recorded(context, meta)
    written, replaced = 0, 0
    counts = {name: 0 for name in sorted({item.meta.name for item in items})}
    for number, batch in enumerate(batches, 1):
        try:
            replaced += _write(context, batch, replace)
        except DalError as exc:
            done = (f"batches 1-{number - 1} ({written} objects) were written and are kept; load again with "
                    "--replace (replace=True) to finish") if number > 1 else "nothing was written"
            raise type(exc)(f"{exc}. Batch {number} of {len(batches)} was not written; {done}") from exc
        written += len(batch)
        for item in batch:
            counts[item.meta.name] += 1
        if progress is not None:
            progress(len(batch))
    return LoadResult(counts, len(batches), replaced)


def _validate(keys: Keys, dump: Dump, source: str) -> list[_Item]:
    """Check every document against the declared model; return them ordered by hybrid and guid."""
    problems: list[str] = []
    items: list[_Item] = []
    for name in sorted(dump.hybrids):
        records = dump.hybrids[name]
        try:
            cls = hybrids.get(name)
        except LookupError:
            problems.append(f"hybrid {name!r} ({len(records)} objects) is not declared; pass the module "
                            "declaring it with --hybrids, or leave it out with --only")
            continue
        meta = cls._meta
        if meta.name != name:
            problems.append(f"hybrid {name!r} must be named by its logical name {meta.name!r}")
            continue
        for guid, data in sorted(records, key=lambda record: record[0]):
            validation = validate_document(meta, data)
            problems += [f"{name} {guid}: {problem.message}" for problem in validation.problems]
            problems += [f"{name} {guid}: field {unknown!r} is not declared by {cls.__name__} (known: "
                         f"{', '.join(meta.fields())})" for unknown in validation.unknown]
            items.append(_Item(meta, guid, validation.document, keys.doc(name, guid)))
    if problems:
        raise InvalidValueError(_listing(f"{source} does not fit the declared model", problems,
                                         "fix those values in the file, or load it with the model that wrote "
                                         "it (--hybrids)"))
    return items


def _unique_within(keys: Keys, items: list[_Item], source: str) -> dict[str, tuple[_Item, str, Any]]:
    """Refuse two objects of the dump holding one unique value; return ``{key: (holder, field, value)}``."""
    holders: dict[str, tuple[_Item, str, Any]] = {}
    problems: list[str] = []
    for item in items:
        for prop in item.meta.unique:
            value = item.document.get(prop.name)
            if value is None:
                continue
            unique_key = keys.unique(item.meta.name, prop.name, value)
            other = holders.get(unique_key)
            if other is not None:
                problems.append(f"{item.meta.cls.__name__}.{prop.name} must be unique, but {other[0].guid} "
                                f"and {item.guid} both hold {value!r}")
            else:
                holders[unique_key] = (item, prop.name, value)
    if problems:
        raise UniqueConstraintError(_listing(f"{source} holds duplicate unique values", problems,
                                             "give each object its own value"))
    return holders


def _present(context: Context, keys: list[str]) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for start in range(0, len(keys), READ_BATCH):
        found.update(context.persistent.get_many(keys[start:start + READ_BATCH]))
    return found


def _preflight(context: Context, items: list[_Item], unique: dict[str, tuple[_Item, str, Any]], replace: bool,
               source: str) -> None:
    """Refuse, before writing, what the store would refuse: taken guids, taken values, missing targets.

    The commits check all of it again, so a writer racing the load is still caught.
    """
    keys = context.keys
    where = f"namespace {context.namespace!r} of {context.persistent_url}"
    if not replace:
        stored = _present(context, [item.doc_key for item in items])
        if stored:
            taken = [item.label for item in items if item.doc_key in stored]
            raise DalError(_listing(f"{len(stored)} objects of {source} are already stored in {where}", taken,
                                    "load into an empty namespace (--namespace), or pass --replace to "
                                    "overwrite them (objects not in the dump are never touched)"))
    in_dump = {(item.meta.name, item.guid) for item in items}
    taken_values: list[str] = []
    for unique_key, entry in _present(context, list(unique)).items():
        item, name, value = unique[unique_key]
        owner = entry.value.decode(errors="replace")
        if owner == item.guid:
            continue
        moving = ""
        if (item.meta.name, owner) in in_dump:
            moving = (" (that object is in the dump too, giving the value up: a load cannot move a unique "
                      "value from one object to another; save that change through dal)")
        taken_values.append(f"{item.meta.cls.__name__}.{name}: {item.guid} has {value!r}, which stored "
                            f"{item.meta.cls.__name__} {owner} holds{moving}")
    if taken_values:
        raise UniqueConstraintError(_listing(f"values of {source} are taken in {where}", taken_values,
                                             "change those values in the file, or in the store"))
    outside: dict[str, list[str]] = {}
    for item in items:
        for relation in item.meta.relations.values():
            target = item.document[relation.guid_field]
            if target is None or relation.target is None:
                continue
            target_name = relation.target._meta.name
            if (target_name, target) not in in_dump:
                outside.setdefault(keys.doc(target_name, target), []).append(
                    f"{item.label}.{relation.name} points at {relation.target.__name__} {target}")
    if outside:
        stored = _present(context, list(outside))
        missing = [line for doc_key, lines in outside.items() if doc_key not in stored for line in lines]
        if missing:
            raise ObjectNotFoundError(_listing(f"relations of {source} point at objects neither in it nor "
                                               f"stored in {where}", missing,
                                               "add those objects to the dump, or clear the relations"))


def _costs(keys: Keys, item: _Item, replace: bool) -> tuple[int, int, int]:
    """Return the most operations, checks and bytes writing ``item`` can take in one commit."""
    plan = plan_write(keys, item.meta, item.guid, None, 0, item.document)
    size = sum(len(op.key) + len(op.value) if isinstance(op, Put) else len(op.key)
               for op in plan.ops if isinstance(op, (Put, Delete)))
    ops = len(plan.ops)
    if replace:  # the stored object's old keys may have to go in the same commit
        meta = item.meta
        ops += len(meta.unique) + len(meta.indexed) + len(meta.relations)
    return ops, len(plan.checks), size


def _batches(keys: Keys, items: list[_Item], replace: bool, batch_size: int,
             max_ops: int) -> list[list[_Item]]:
    """Cut the dependency-ordered objects into commits within the limits, never splitting a component.

    A component larger than the limits becomes one commit of its own: splitting it would
    leave a link to an object not yet written (etcd then refuses it, saying which limit to raise).
    """
    batches: list[list[_Item]] = []
    current: list[_Item] = []
    ops = checks = size = 0
    for component in _components(items):
        costs = [_costs(keys, item, replace) for item in component]
        c_ops, c_checks, c_size = (sum(cost[i] for cost in costs) for i in range(3))
        if current and (len(current) + len(component) > batch_size or ops + c_ops > max_ops
                        or checks + c_checks > max_ops or size + c_size > MAX_BATCH_BYTES):
            batches.append(current)
            current, ops, checks, size = [], 0, 0, 0
        current += component
        ops, checks, size = ops + c_ops, checks + c_checks, size + c_size
    if current:
        batches.append(current)
    return batches


def _components(items: list[_Item]) -> list[list[_Item]]:
    """Return the strongly connected components of "points at", targets before the objects pointing at them.

    Tarjan's algorithm, iterative (a long chain of parents must not hit the recursion limit):
    it closes a component only after every component reachable from it, which is exactly
    targets first.
    """
    position = {(item.meta.name, item.guid): number for number, item in enumerate(items)}
    edges: list[list[int]] = []
    for number, item in enumerate(items):
        targets = []
        for relation in item.meta.relations.values():
            target = item.document[relation.guid_field]
            if target is not None and relation.target is not None:
                found = position.get((relation.target._meta.name, target))
                if found is not None and found != number:
                    targets.append(found)
        edges.append(targets)
    index = [-1] * len(items)
    low = [0] * len(items)
    on_stack = [False] * len(items)
    stack: list[int] = []
    result: list[list[_Item]] = []
    counter = 0
    for root in range(len(items)):
        if index[root] >= 0:
            continue
        work = [(root, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack[node] = True
            else:  # back from the child at next_edge - 1
                low[node] = min(low[node], low[edges[node][next_edge - 1]])
            descended = False
            while next_edge < len(edges[node]):
                child = edges[node][next_edge]
                next_edge += 1
                if index[child] < 0:
                    work.append((node, next_edge))
                    work.append((child, 0))
                    descended = True
                    break
                if on_stack[child]:
                    low[node] = min(low[node], index[child])
            if descended or low[node] != index[node]:
                continue
            component: list[int] = []
            while True:
                member = stack.pop()
                on_stack[member] = False
                component.append(member)
                if member == node:
                    break
            result.append([items[member] for member in sorted(component)])
    return result


def _write(context: Context, batch: list[_Item], replace: bool) -> int:
    """Write one batch in one commit; return how many stored objects it replaced."""
    keys = context.keys
    written_here = {item.doc_key for item in batch}
    for attempt in range(MAX_ATTEMPTS):
        stored = _present(context, [item.doc_key for item in batch]) if replace else {}
        checks, ops, reasons = [], [], []
        for item in batch:
            entry = stored.get(item.doc_key)
            before: Document | None = None
            if entry is not None:
                try:
                    before = decode(entry.value)
                except ValueError as exc:
                    raise BackendError(f"{item.label} cannot be replaced: its stored document is not a "
                                       f"JSON object ({exc}), so its old keys are unknown; run `dal check`"
                                       ) from exc
            revision = entry.revision if entry is not None else 0
            plan = plan_write(keys, item.meta, item.guid, before, revision, item.document)
            for check, reason in zip(plan.checks, plan.reasons, strict=True):
                if isinstance(check, Exists) and check.key in written_here:
                    continue  # this commit writes the target: it appears together with the link
                checks.append(check)
                reasons.append((item, reason))
            ops += plan.ops
        result = context.commit(checks, ops)
        if result.ok:
            invalid: list[str] = []
            for item in batch:
                before = decode(stored[item.doc_key].value) if item.doc_key in stored else None
                if before is not None:
                    invalid += _cache_keys(keys, item)
                invalid += changed_versions(keys, item.meta, item.guid, before, item.document)
            context.invalidate(*invalid)  # cached documents, dynamics and query results
            return sum(1 for item in batch if item.doc_key in stored)
        failed = [reasons[index] for index in result.failed]
        if not (replace and all(reason.kind == "document" for _, reason in failed)):
            raise _refused(context, *failed[0])
        time.sleep(0.01 * 2 ** attempt)  # another writer changed an object we replace: read it again
    raise RaceConditionError(f"objects of this batch kept changing while being replaced ({MAX_ATTEMPTS} "
                             "attempts); load again when other writers are quieter")


def _cache_keys(keys: Keys, item: _Item) -> list[str]:
    meta = item.meta
    return [keys.cached_doc(meta.name, item.guid),
            *(keys.cached_dynamic(meta.name, item.guid, name) for name in meta.dynamics)]


def _refused(context: Context, item: _Item, reason: Reason) -> DalError:
    """Explain why the store refused a batch, naming the object that made it fail."""
    name = item.meta.cls.__name__
    if reason.kind == "document":
        return DalError(f"{item.label} was stored by another writer while loading; load with --replace to "
                        "overwrite it")
    if reason.kind == "unique":
        holder = context.persistent.get(context.keys.unique(item.meta.name, reason.field, reason.value))
        owner = holder.value.decode(errors="replace") if holder is not None else "another object"
        return UniqueConstraintError(f"{name}.{reason.field} must be unique: {item.guid} has "
                                     f"{reason.value!r}, which {name} {owner} took while loading; change one "
                                     "of them")
    relation = item.meta.relations[reason.field]
    target = relation.target.__name__ if relation.target is not None else "object"
    return ObjectNotFoundError(f"{item.label}.{reason.field} points at {target} {reason.value}, which was "
                               "deleted while loading; add it to the dump or clear the relation")


# --- copying ------------------------------------------------------------------------------


def copy(source: Context, destination: Context, *, only: Sequence[HybridMeta] | None = None,
         replace: bool = False, batch_size: int = BATCH_SIZE, max_ops: int = MAX_TXN_OPS,
         progress: Callable[[int], Advance] | None = None) -> CopyResult:
    """Copy the objects of one namespace into another (another store, usually), then count both sides.

    This is :func:`read_store` fed to :func:`load`: documents re-validated, keys rebuilt.
    A destination namespace holding anything is refused unless ``replace`` (which
    overwrites objects with the same guid and leaves others, which then show up as a count
    mismatch). ``progress``, given the number of objects to write, returns the callback to
    advance as batches are written.
    """
    if store_digest(source.persistent) == store_digest(destination.persistent) \
            and source.namespace == destination.namespace:
        raise InvalidValueError(f"the source and destination are both namespace {source.namespace!r} of "
                                f"{source.persistent_url}; copy into another namespace or store")
    if not replace and destination.persistent.scan(destination.keys.root, limit=1):
        raise DalError(f"namespace {destination.namespace!r} of {destination.persistent_url} is not empty; "
                       "copy into an empty namespace, or pass --replace to overwrite objects with the same "
                       "guid (objects only the destination holds are kept, and then fail the count check)")
    data = read_store(source, only)
    advance = progress(data.total) if progress is not None else None
    loaded = load(destination, data, replace=replace, batch_size=batch_size, max_ops=max_ops,
                  progress=advance, source=f"namespace {source.namespace!r} of {source.persistent_url}")
    names = set(data.hybrids)
    names |= {meta.name for meta in only} if only is not None else {cls._meta.name for cls in hybrids.all()}
    counted = count_documents(destination, sorted(names))
    expected = {name: len(data.hybrids.get(name, [])) for name in counted}
    return CopyResult(loaded, expected, counted)
