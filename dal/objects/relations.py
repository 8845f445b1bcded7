"""Relations seen from their target: link scans, one-to-one refusals, and unlinking on delete.

Every relation value is stored twice in one transaction: as ``<relation>_guid`` in the
source's document and as one link key under the target
(``l/<target>/<target guid>/<source>/<relation>/<source guid>``). The link keys answer
"who points at this object" with one prefix scan, and let a delete check, inside its own
transaction, that nobody linked to the object since it looked (or, for a hybrid no declared
relation targets, that nothing links to it at all: then it does not scan first, see
:func:`assume_unlinked`). A one-to-one relation also
keeps one key per target (``r/<source>/<relation>/<target guid>``, see
:func:`dal.objects.transaction.plan_write`), so a second object pointing at a target fails its own
commit (:func:`onetoone_refusal` says who holds it).

A new object's ``data=`` (or keywords) names each relation once (:func:`check_filled`): as the
related object, or as its ``<relation>_guid``, never both.

A relation declared by a class is held by its subclass hybrids too (inherited, stored under
their own names): the reverse accessor lists their objects as well, and a delete counts and
``abandon`` unlinks them (:class:`dal.model.meta.Reverse`). The reverse accessors themselves
are part of the model (:mod:`dal.model.reverse`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from inspect import getattr_static
from typing import TYPE_CHECKING, Any

from dal.backends.base import Check, Delete, Op, PrefixEmpty, PrefixUnchanged, Put, Revision
from dal.backends.paging import scan_all
from dal.cache.versions import changed_versions
from dal.exceptions import InvalidValueError, LinkedObjectError, OneToOneError
from dal.model.meta import HybridMeta
from dal.model.registry import family
from dal.model.reverse import ReverseList
from dal.objects.transaction import decode, encode
from dal.structures import Relation

if TYPE_CHECKING:
    from dal.config import Context

ABANDON_ALL = "_all"
#: the reverse relations an empty ``abandon`` covers
_NOTHING: frozenset[str] = frozenset()


def onetoone_refusal(context: Context, relation: Relation, source_guid: str,
                     target_guid: str) -> OneToOneError:
    """Return the error refusing ``source_guid`` as a second object pointing at a one-to-one target.

    Names the object already pointing there (read from its one-to-one key, or from its link when
    the keys of older data are not built yet): this costs reads on the refusal only.
    """
    assert relation.target is not None and relation.owner is not None
    target = relation.target
    keys = context.keys
    holder = "another object"
    for member in family(relation):
        assert member.owner is not None
        source = member.owner._meta.name
        entry = context.persistent.get(keys.onetoone(source, member.name, target_guid))
        found = entry.value.decode(errors="replace") if entry is not None else None
        if found is None:
            links = context.persistent.scan(keys.links(target._meta.name, target_guid, source, member.name),
                                            limit=1)
            found = links[0][0].rsplit("/", 1)[1] if links else None
        if found is not None:
            holder = f"{member.owner.__name__} {found}"
            break
    return OneToOneError(
        f"{relation.qualified} is one-to-one: {holder} already points at {target.__name__} {target_guid}; "
        f"unlink it first (set its {relation.name} to None, or delete it), or point "
        f"{relation.owner.__name__} {source_guid} elsewhere")


def check_linkable(relation: Relation, target: type[Any], value: Any) -> None:
    """Refuse an object ``relation`` (to ``target``) cannot point at: one of another hybrid (a subclass is
    another, stored under another name), or one deleted by its ``delete()``, whose save is refused (so a
    save of the link, refused for a target not stored, could only say to save what cannot be)."""
    if type(value) is not target:
        raise InvalidValueError(f"{relation.qualified} holds a {target.__name__}, not {value!r}")
    if "_deleted" in value.__dict__:
        raise InvalidValueError(f"{relation.qualified}: {target.__name__} {value.guid} was deleted by its "
                                "delete(); link an existing one")


def check_filled(hybrid: str, meta: HybridMeta, values: Mapping[Any, Any]) -> None:
    """Refuse the ``data=`` (or keywords) of a new ``hybrid`` object naming what it lacks, or a relation
    both as an object and as its ``<relation>_guid``: assigned one after the other, the last would win
    (and a guid after the object drops the object, unchecked), even when they agree; one is enough."""
    unknown = sorted((name for name in values if name not in meta.assignable), key=repr)
    if unknown:  # sorted by repr: names that are no str (data={1: ...}) must not break the sort
        raise InvalidValueError(
            f"{hybrid} has no property or relation {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(meta.assignable))}")
    both = [name for name, relation in meta.relations.items()
            if name in values and relation.guid_field in values]
    if both:
        raise InvalidValueError(
            f"{hybrid}(...) is given both {'; '.join(f'{name} and {name}_guid' for name in both)}: two forms "
            f"of one link; give one of them ({both[0]}=the object, or {both[0]}_guid=its guid)")


@dataclass
class Unlink:
    """What deleting an object adds to its transaction: checks, ops, and caches to drop after."""

    checks: list[Check] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    cache_keys: list[str] = field(default_factory=list)
    #: (hybrid name, guid) of each referrer document the plan rewrites: the delete notes them as
    #: seen at its revision, so that this process never serves them older afterwards
    rewritten: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Referrer:
    """One referrer document to rewrite: its hybrid, guid, and every relation field to clear in it."""

    meta: HybridMeta
    guid: str
    fields: list[str] = field(default_factory=list)


def check_abandon(meta: HybridMeta, abandon: object) -> frozenset[str]:
    """Return the reverse accessor names ``abandon`` covers; raise on names this hybrid lacks,
    and on anything but a collection of names (a str or bytes is one value, not a list)."""
    if isinstance(abandon, str):
        raise InvalidValueError(f"abandon takes a list of reverse relation names, e.g. [{abandon!r}]")
    names = (list(abandon) if isinstance(abandon, Iterable) and not isinstance(abandon, (bytes, bytearray))
             else None)
    if names == []:  # every plain delete: nothing to look up
        return _NOTHING
    known = reverse_names(meta)
    if names is None or not all(isinstance(name, str) for name in names):
        raise InvalidValueError(
            f"abandon takes a list of reverse relation names, not {abandon!r}; known: "
            f"{', '.join(sorted(known)) or 'none'} (or '{ABANDON_ALL}')")
    unknown = sorted(set(names) - known - {ABANDON_ALL})  # a typo beside '_all' is one too
    if unknown:
        raise InvalidValueError(
            f"{meta.cls.__name__} has no reverse relation {', '.join(unknown)}; known: "
            f"{', '.join(sorted(known)) or 'none'} (or '{ABANDON_ALL}')")
    return known if ABANDON_ALL in names else frozenset(names)


def reverse_names(meta: HybridMeta) -> frozenset[str]:
    """Return the reverse relations ``meta``'s objects read: the hybrid's own, and those its objects
    inherit from a hybrid base (``SubParent`` reads ``Parent``'s ``children``) unless it replaces them.

    An inherited one names nothing to unlink: its relation holds objects of the base hybrid only (an
    object of a subclass hybrid is refused), whose links are filed under the base's name, not under
    this object's, which the delete scans; it lists only what points at a base object of this guid.
    """
    names = set(meta.reverse)
    for base in meta.cls.__mro__[1:]:
        parent: HybridMeta | None = vars(base).get("_meta")
        if parent is not None:
            names.update(name for name in parent.reverse
                         if isinstance(getattr_static(meta.cls, name, None), ReverseList))
    return frozenset(names)


def assume_unlinked(context: Context, meta: HybridMeta, guid: str) -> Unlink:
    """Plan deleting an object nothing is expected to point at, without scanning its links.

    For a hybrid no declared relation targets: the commit checks that no link to the object
    exists (which the scan of :func:`plan_unlink` would otherwise confirm first, a round trip),
    and fails on that check if one does; the delete then scans, refuses or unlinks.
    """
    return Unlink(checks=[PrefixEmpty(context.keys.links(meta.name, guid))])


def plan_unlink(context: Context, meta: HybridMeta, guid: str, abandon: frozenset[str]) -> Unlink:
    """Plan unlinking everything that points at an object about to be deleted.

    Raise LinkedObjectError, before anything is written, when objects point at it through a
    relation not in ``abandon``, or through a mandatory one. The plan checks that no link
    to the object appeared since the scan (PrefixUnchanged), so a referrer saved meanwhile
    fails the delete instead of being left dangling.
    """
    prefix = context.keys.links(meta.name, guid)
    links = scan_all(context.persistent, prefix)
    plan = Unlink(checks=[PrefixUnchanged(prefix, max((entry.revision for _, entry in links), default=0))])
    if not links:  # nothing points at it (most deletes): nothing to refuse or unlink
        return plan
    groups: dict[tuple[str, str], list[str]] = {}
    itself: set[tuple[str, str]] = set()
    for key, _ in links:
        source, relation_name, source_guid = key.rsplit("/", 3)[1:]
        if source == meta.name and source_guid == guid:
            itself.add((source, relation_name))
            continue  # the object points at itself: its own delete drops that link (and its key)
        groups.setdefault((source, relation_name), []).append(source_guid)
    referrers: dict[str, _Referrer] = {}
    for relation, guids in _abandoned(meta, guid, groups, abandon):
        _unlink(context, plan, meta, guid, relation, guids, referrers, points_at_itself=(
            relation.owner is not None and (relation.owner._meta.name, relation.name) in itself))
    _rewrite(context, plan, guid, referrers)
    return plan


def _abandoned(meta: HybridMeta, guid: str, groups: dict[tuple[str, str], list[str]],
               abandon: frozenset[str]) -> list[tuple[Relation, list[str]]]:
    """Return the relations to unlink, with the guids pointing through each; raise LinkedObjectError
    when a group of links is not abandoned, or belongs to a mandatory relation."""
    # every relation a reverse accessor lists: the declaring hybrid's, and its subclass hybrids'
    listed = {(member.owner._meta.name, member.name): (reverse.relation.foreign_key, member)
              for reverse in meta.reverse.values() for member in reverse.relations
              if member.owner is not None}
    blocking, mandatory = [], []
    blocked = 0  # the referrers of the blocking links
    #: the reverse relations of the blocking links that abandon= could unlink, and the mandatory ones
    optional: set[str] = set()
    given: set[str] = set()  # the reverse relations abandon= named that do unlink
    held: list[str] = []
    unlink: list[tuple[Relation, list[str]]] = []
    for (source, relation_name), guids in sorted(groups.items()):
        accessor, relation = listed.get((source, relation_name), (None, None))
        owner = relation.owner if relation is not None else None
        label = f"{len(guids)} {owner.__name__ if owner is not None else source}.{relation_name}"
        if relation is None or accessor not in abandon:
            blocking.append(label)
            blocked += len(guids)
            if relation is not None and relation.mandatory:
                held.append(relation.qualified)
            elif relation is not None and accessor is not None:
                optional.add(accessor)
        elif relation.mandatory:
            mandatory.append(f"{relation.qualified} (mandatory, {len(guids)} linked)")
        else:
            unlink.append((relation, guids))
            given.add(accessor)  # named again in the remedy: abandon= replaces, not adds to, the list
    name = f"{meta.cls.__name__} {guid}"
    if blocking:
        # name only a remedy that works: abandon= unlinks optional relations, never mandatory ones
        remedy = f"delete or relink {'it' if blocked == 1 else 'them'}" + (
            f", or pass abandon={sorted(optional | given)!r} to unlink "
            f"{'those' if len(optional) > 1 else 'that'} optional relation{'s' * (len(optional) > 1)}"
            if optional else "")
        one = len(held) == 1
        mandatory_note = (f" ({', '.join(held)} {'is' if one else 'are'} mandatory: abandon= cannot unlink "
                          f"{'it' if one else 'them'})" if held else "")
        raise LinkedObjectError(f"{name} cannot be deleted: {', '.join(blocking)} "
                                f"{'points' if blocked == 1 else 'point'} at it; "
                                f"{remedy}{mandatory_note}")
    if mandatory:
        raise LinkedObjectError(
            f"{name} cannot be deleted: {', '.join(mandatory)} cannot be abandoned, since that would leave "
            "objects without a mandatory relation; delete or relink them first")
    return unlink


def _unlink(context: Context, plan: Unlink, meta: HybridMeta, guid: str, relation: Relation,
            guids: list[str], referrers: dict[str, _Referrer], *, points_at_itself: bool) -> None:
    """Add to ``plan`` deleting the links of ``guids`` to ``guid`` through ``relation``, and note in
    ``referrers`` (by document key) that their ``relation`` field is to be cleared."""
    keys = context.keys
    assert relation.owner is not None
    source_meta = relation.owner._meta
    if relation.onetoone and not points_at_itself:
        plan.ops.append(Delete(keys.onetoone(source_meta.name, relation.name, guid)))  # the target goes
    for source_guid in guids:
        plan.ops.append(Delete(keys.link(meta.name, guid, source_meta.name, relation.name, source_guid)))
        doc_key = keys.doc(source_meta.name, source_guid)
        referrers.setdefault(doc_key, _Referrer(source_meta, source_guid)).fields.append(relation.guid_field)


def _rewrite(context: Context, plan: Unlink, guid: str, referrers: dict[str, _Referrer]) -> None:
    """Add to ``plan`` one rewrite of each referrer document, with its fields that point at ``guid`` cleared.

    One check and one Put per document, whatever the number of relations through which it points
    at the deleted object: a Put per relation, each clearing its own field in the document as
    read, would leave the last one written, and the fields the others cleared pointing again.

    The documents are read after the link scan, so another writer may have moved a referrer
    meanwhile: a field that points elsewhere (or at nothing) now is left as it is, with its link and
    one-to-one key (clearing it would undo that writer's committed move and leave its new link
    stale), and a document with no field left to clear is not written. The scanned links and the
    target's one-to-one key still go: they name the deleted object, which nothing may point at
    once it is gone. Moving a referrer back meanwhile writes its link again, which fails the
    plan's PrefixUnchanged; changing a document after it was read fails its Revision check.
    """
    if not referrers:  # only the object itself pointed at it
        return
    keys = context.keys
    stored = context.persistent.get_many(list(referrers))
    for doc_key, referrer in referrers.items():
        entry = stored.get(doc_key)
        if entry is None:  # gone meanwhile: its links go all the same
            continue
        document = decode(entry.value)
        pointing = [name for name in referrer.fields if document.get(name) == guid]
        if not pointing:  # moved away or unlinked since the scan, by a write this one must keep
            continue
        cleared = {**document, **dict.fromkeys(pointing)}
        source_meta, source_guid = referrer.meta, referrer.guid
        plan.cache_keys += changed_versions(keys, source_meta, source_guid, document, cleared)
        plan.checks.append(Revision(doc_key, entry.revision))
        plan.ops.append(Put(doc_key, encode(cleared)))
        plan.cache_keys.append(keys.cached_doc(source_meta.name, source_guid))
        plan.cache_keys += [keys.cached_dynamic(source_meta.name, source_guid, dynamic)
                            for dynamic in source_meta.dynamics]
        plan.rewritten.append((source_meta.name, source_guid))
