"""Relations seen from their target: reverse accessors, link scans, and unlinking on delete.

Every relation value is stored twice in one transaction: as ``<relation>_guid`` in the
source's document and as one link key under the target
(``l/<target>/<target guid>/<source>/<relation>/<source guid>``). The link keys answer
"who points at this object" with one prefix scan, and let a delete check, inside its own
transaction, that nobody linked to the object since it looked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dal.backends.base import Check, Delete, Entry, Op, PrefixUnchanged, Put, Revision
from dal.exceptions import InvalidRelationError, InvalidValueError, LinkedObjectError
from dal.structures import Relation

if TYPE_CHECKING:
    from dal.config import Context
    from dal.dataobject import DataObject
    from dal.meta import HybridMeta

SCAN_BATCH = 1000
ABANDON_ALL = "_all"


def scan_all(context: Context, prefix: str) -> list[tuple[str, Entry]]:
    """Return every key under ``prefix``, scanning in batches."""
    return [item for batch in scan_batches(context, prefix) for item in batch]


def scan_batches(context: Context, prefix: str, size: int = SCAN_BATCH, *,
                 start_after: str | None = None) -> Iterator[list[tuple[str, Entry]]]:
    """Yield the keys under ``prefix`` (after ``start_after``) in key order, ``size`` at a time at most."""
    start = start_after
    while True:
        batch = context.persistent.scan(prefix, start_after=start, limit=size)
        if batch:
            yield batch
        if len(batch) < size:
            return
        start = batch[-1][0]


class ReverseList:
    """``target.<foreign_key>``: the objects pointing here, a ``DataList`` evaluated anew on each access."""

    def __init__(self, relation: Relation) -> None:
        self.relation = relation

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        from dal.datalist import DataList

        return DataList.pointing_at(self.relation, obj)

    def __set__(self, obj: DataObject, value: Any) -> None:
        raise AttributeError(f"{type(obj).__name__}.{self.relation.foreign_key} is a reverse relation and "
                             f"read-only; set {self.relation.qualified} on the other side instead")


class ReverseGuids(ReverseList):
    """``target.<foreign_key>_guids``: the guids of the objects pointing here."""

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return _pointing(self.relation, obj)


class ReverseOne(ReverseList):
    """``target.<foreign_key>`` of a one-to-one relation: the one object pointing here, or ``None``."""

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        guid = _only(self.relation, obj)
        if guid is None:
            return None
        assert self.relation.owner is not None
        return self.relation.owner(guid)


class ReverseOneGuid(ReverseList):
    """``target.<foreign_key>_guid`` of a one-to-one relation."""

    def __get__(self, obj: DataObject | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return _only(self.relation, obj)


def _only(relation: Relation, obj: DataObject) -> str | None:
    guids = _pointing(relation, obj)
    if len(guids) > 1:
        raise InvalidRelationError(
            f"{relation.qualified} is one-to-one, but {len(guids)} objects point at {type(obj).__name__} "
            f"{obj.guid}: {', '.join(guids)}; unlink all but one")
    return guids[0] if guids else None


def _pointing(relation: Relation, obj: DataObject) -> list[str]:
    """Return the guids whose ``relation`` points at ``obj``: a cached query over the link keys."""
    from dal.datalist import DataList

    return DataList.pointing_at(relation, obj).guids


def reverse_accessors(relation: Relation) -> dict[str, ReverseList]:
    """Return the attributes a relation installs on its target, by name."""
    name = relation.foreign_key
    if relation.onetoone:
        return {name: ReverseOne(relation), f"{name}_guid": ReverseOneGuid(relation)}
    return {name: ReverseList(relation), f"{name}_guids": ReverseGuids(relation)}


@dataclass
class Unlink:
    """What deleting an object adds to its transaction: checks, ops, and caches to drop after."""

    checks: list[Check] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    cache_keys: list[str] = field(default_factory=list)


def check_abandon(meta: HybridMeta, abandon: Collection[str]) -> frozenset[str]:
    """Return the reverse accessor names ``abandon`` covers; raise on names this hybrid lacks."""
    if isinstance(abandon, str):
        raise InvalidValueError(f"abandon takes a list of reverse relation names, e.g. [{abandon!r}]")
    names = set(abandon)
    if ABANDON_ALL in names:
        return frozenset(meta.reverse)
    unknown = sorted(names - set(meta.reverse))
    if unknown:
        raise InvalidValueError(
            f"{meta.cls.__name__} has no reverse relation {', '.join(unknown)}; known: "
            f"{', '.join(sorted(meta.reverse)) or 'none'} (or '{ABANDON_ALL}')")
    return frozenset(names)


def plan_unlink(context: Context, meta: HybridMeta, guid: str, abandon: frozenset[str]) -> Unlink:
    """Plan unlinking everything that points at an object about to be deleted.

    Raise LinkedObjectError, before anything is written, when objects point at it through a
    relation not in ``abandon``, or through a mandatory one. The plan checks that no link
    to the object appeared since the scan (PrefixUnchanged), so a referrer saved meanwhile
    fails the delete instead of being left dangling.
    """
    from dal.results import changed_versions
    from dal.transaction import decode, encode

    keys = context.keys
    links = scan_all(context, keys.links(meta.name, guid))
    plan = Unlink(checks=[PrefixUnchanged(keys.links(meta.name, guid),
                                          max((entry.revision for _, entry in links), default=0))])
    groups: dict[tuple[str, str], list[str]] = {}
    for key, _ in links:
        source, relation_name, source_guid = key.rsplit("/", 3)[1:]
        if source == meta.name and source_guid == guid:
            continue  # the object points at itself: its own delete drops that link
        groups.setdefault((source, relation_name), []).append(source_guid)
    blocking, mandatory = [], []
    unlink: list[tuple[Relation, list[str]]] = []
    for (source, relation_name), guids in sorted(groups.items()):
        reverse = next((r for r in meta.reverse.values()
                        if r.source._meta.name == source and r.relation.name == relation_name), None)
        label = f"{len(guids)} {reverse.source.__name__ if reverse else source}.{relation_name}"
        if reverse is None or reverse.relation.foreign_key not in abandon:
            blocking.append(label)
        elif reverse.relation.mandatory:
            mandatory.append(f"{reverse.relation.qualified} (mandatory, {len(guids)} linked)")
        else:
            unlink.append((reverse.relation, guids))
    name = f"{meta.cls.__name__} {guid}"
    if blocking:
        raise LinkedObjectError(
            f"{name} cannot be deleted: {', '.join(blocking)} point at it; delete or relink them, or pass "
            "abandon=[...] naming the reverse relations to unlink "
            f"(known: {', '.join(sorted(meta.reverse))})")
    if mandatory:
        raise LinkedObjectError(
            f"{name} cannot be deleted: {', '.join(mandatory)} cannot be abandoned, since that would leave "
            "objects without a mandatory relation; delete or relink them first")
    for relation, guids in unlink:
        assert relation.owner is not None
        source_meta = relation.owner._meta
        doc_keys = [keys.doc(source_meta.name, source_guid) for source_guid in guids]
        stored = context.persistent.get_many(doc_keys)
        for source_guid, doc_key in zip(guids, doc_keys, strict=True):
            plan.ops.append(Delete(keys.link(meta.name, guid, source_meta.name, relation.name, source_guid)))
            entry = stored.get(doc_key)
            if entry is None:
                continue
            document = decode(entry.value)
            plan.cache_keys += changed_versions(keys, source_meta, source_guid, document,
                                                {**document, relation.guid_field: None})
            document[relation.guid_field] = None
            plan.checks.append(Revision(doc_key, entry.revision))
            plan.ops.append(Put(doc_key, encode(document)))
            plan.cache_keys.append(keys.cached_doc(source_meta.name, source_guid))
            plan.cache_keys += [keys.cached_dynamic(source_meta.name, source_guid, dynamic)
                                for dynamic in source_meta.dynamics]
    return plan

