"""``dal.save_many(objects)``: several new or changed objects in as few commits as the store allows.

Each object is planned as ``save()`` plans it (:func:`dal.objects.transaction.plan_write`: document,
unique keys, index entries, links, the checks guarding them); the plans are packed into commits of
at most :data:`MAX_OPS` operations and as many checks (etcd's default ``--max-txn-ops``) and
:data:`MAX_BYTES` of keys and values (under etcd's default ``--max-request-bytes``), each one
atomic. A commit never holds two plans touching one key (two new objects claiming one unique value
go to two commits, so the second is refused as a save would be). The order of ``objects`` does not
matter to links: a new object goes in the commit of the objects linking to it or an earlier one, and
new objects linking to each other in a cycle share one commit. A link to an object created in the
same commit needs no existence check: both land together or neither does. Nor does it matter to a
handover: an object giving up a unique value or a one-to-one target goes in a commit before the one
of the object taking it (:mod:`dal.objects.bulk_order`). Where no order of commits can do both (a
swap, or a giver linking to the new object taking what it gives up), the taker is refused with the
error ``save()`` raises before anything is written.

A commit refused on a constraint (a unique value taken, a missing target, a one-to-one link taken)
raises the error ``save()`` raises, naming the object; nothing of that commit is written, and the
commits before it stay written. A cycle no commit can hold (over MAX_OPS, or two of its objects
claiming one unique value) is refused before anything is written. A commit refused because an
object changed concurrently commits the others together, then saves each of those objects with
``save()`` (its merge rules and errors; as in ``save()``, a unique value or link refused to an object
that changed concurrently is left to that merge, which may find it its own), every one even when an
earlier one is refused, and raises the first refusal, naming the others refused; if the commit of the
others is refused, the call stops there, naming the changed objects left unsaved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dal.backends.base import Check, Op
from dal.config import Context, current
from dal.exceptions import (
    CommitOutcomeUnknownError,
    DalError,
    InvalidValueError,
    RaceConditionError,
    UniqueConstraintError,
)
from dal.model.registry import hybrids
from dal.objects.bulk_order import _Item, _label, _name, _ordered, _raise_naming, _targets
from dal.objects.refusals import check_datastore_wins
from dal.objects.schema import onetoone_ready
from dal.objects.views import SCHEMA, stale
from dal.objects.writes import MAX_ATTEMPTS, Writes
from dal.values import safe_repr

#: operations (and, separately, checks) per commit: etcd refuses more by default; one is the journal's
MAX_OPS = 127
#: bytes of keys and values written per commit: etcd refuses a request over its --max-request-bytes
#: (1.5 MiB by default) whole; what is left is for the checks, the journal record and the framing
MAX_BYTES = 1 << 20


def save_many(objects: Iterable[Writes], datastore_wins: bool | None = False) -> None:
    """Store every new or changed object of ``objects``, in as few atomic commits as the store allows.

    ``datastore_wins`` is ``save()``'s. Returns when all are stored; see the module for failures.
    """
    check_datastore_wins(datastore_wins, "save_many()")
    # all checked before anything is planned: a bad item never leaves the others half-saved
    if isinstance(objects, (str, bytes, Mapping, Writes)) or not isinstance(objects, Iterable):
        raise InvalidValueError(f"save_many() takes a list of objects, not {safe_repr(objects)}; pass [obj] "
                                "to save one")
    objects = list(objects)
    for index, obj in enumerate(objects):
        if not isinstance(obj, Writes):
            raise InvalidValueError(f"save_many() takes a list of objects, but item {index} is "
                                    f"{safe_repr(obj)}; nothing was saved")
    context = current()
    items: list[_Item] = []
    seen: set[int] = set()
    for index, obj in enumerate(objects):
        if id(obj) not in seen:
            seen.add(id(obj))
            try:
                item = _plan(context, obj, datastore_wins)
            except DalError as exc:  # one of many: the message says which, and that no commit was made
                _name(exc, f"save_many: {type(obj).__name__} {obj.guid} (item {index}) refused, nothing of "
                           "this call committed")
                raise
            if item is not None:
                items.append(item)
    for chunk in _pack(_ordered(items)):
        _commit(context, chunk, datastore_wins)


def _plan(context: Context, obj: Any, datastore_wins: bool | None) -> _Item | None:
    """Plan ``obj``'s save as ``save()`` plans it; None when nothing changed."""
    obj._check_mandatory()
    prepared = obj._prepare(context, datastore_wins)
    if prepared is None:
        return None
    save, stored, new = prepared
    plan, invalidate = obj._plan(context, stored, obj._revision, new, onetoone_ready(context, obj._meta))
    return _Item(obj, plan, new, save, stored is None, invalidate)


def _sent(item: _Item, created: set[str]) -> list[int]:
    """The indexes of the checks of ``item`` a commit sends, when it creates the documents ``created``.

    The existence check of a target created in the same commit is left out: the store evaluates
    every check against what it held before the commit, where that target is still absent.
    """
    targets, reasons = _targets(item), item.plan.reasons
    # the check of the schema record a create planned from goes once per commit (see _views)
    return [index for index in range(len(item.plan.checks))
            if targets.get(index) not in created and reasons[index] is not SCHEMA]


def _views(chunk: list[_Item]) -> dict[Check, list[_Item]]:
    """The checks of the schema records the chunk's creates planned from, each once, and their items."""
    views: dict[Check, list[_Item]] = {}
    for item in chunk:
        for check, reason in zip(item.plan.checks, item.plan.reasons, strict=True):
            if reason is SCHEMA:
                views.setdefault(check, []).append(item)
    return views


def _pack(groups: list[list[_Item]], after: str = "") -> list[list[_Item]]:
    """Split the groups into commits within MAX_OPS and MAX_BYTES, no two plans of one commit touching
    one key (a group larger than MAX_BYTES goes alone: only the store knows whether it takes it).
    ``after``: the commits of the call written before, when packing again what ``after`` refused."""
    chunks: list[list[_Item]] = []
    chunk: list[_Item] = []
    ops = checks = size = 0
    keys: set[str] = set()
    created: set[str] = set()  # the documents the chunk creates
    views: set[Check] = set()  # the schema-record checks the chunk sends, each once (_views)
    for group in groups:
        touched = _touched(group)
        mine = {item.doc for item in group if item.created}
        group_ops = sum(len(item.plan.ops) for item in group)
        viewed = set(_views(group))
        group_checks = sum(len(_sent(item, created | mine)) for item in group) + len(viewed - views)
        group_size = sum(item.size for item in group)
        if chunk and (ops + group_ops > MAX_OPS or touched & keys or checks + group_checks > MAX_OPS
                      or size + group_size > MAX_BYTES):
            chunks.append(chunk)
            chunk, ops, checks, size, keys, created, views = [], 0, 0, 0, set(), set(), set()
            group_checks = sum(len(_sent(item, mine)) for item in group) + len(viewed)  # alone
        created |= mine
        views |= viewed
        if len(group) > 1 and (group_ops > MAX_OPS or group_checks > MAX_OPS):
            saved = f"nothing of {after} was saved (those before it were)" if after else "nothing was saved"
            raise InvalidValueError(
                f"save_many: {len(group)} new objects link to each other in a cycle "
                f"({', '.join(map(_label, group))}) and need {group_ops} operations and {group_checks} "
                f"checks in one commit, more than {MAX_OPS}; {saved}. Save one of them "
                "without its link first, then link it")
        chunk += group
        ops, checks, size, keys = ops + group_ops, checks + group_checks, size + group_size, keys | touched
    if chunk:
        chunks.append(chunk)
    return chunks


def _touched(group: list[_Item]) -> set[str]:
    """The keys the group's plans touch; two new objects of a cycle claiming one key are refused here,
    before anything is written, as neither can be stored without the other."""
    keys: set[str] = set()
    for item in group:
        touched = item.keys()
        clash = touched & keys
        if clash:
            for index, check in enumerate(item.plan.checks):  # a value both claim: save()'s refusal of it
                if item.plan.reasons[index].kind in ("unique", "onetoone") and \
                        getattr(check, "key", getattr(check, "prefix", "")) in clash:
                    _raise_naming(item, index)
            kin = [reason.value for check, reason in zip(item.plan.checks, item.plan.reasons, strict=True)
                   if reason.kind == "kin" and getattr(check, "key", "") in clash]
            if kin:
                raise UniqueConstraintError(
                    f"save_many: {_label(item)} has the guid of a new {hybrids.get(kin[0]).__name__} of this "
                    "call, another hybrid of its class tree, where one guid names one object; nothing was "
                    "saved")
            raise InvalidValueError(f"save_many: {_label(item)} touches {sorted(clash)[0]!r} as another new "
                                    "object of its cycle does; nothing was saved")
        keys |= touched
    return keys


def _commit(context: Context, chunk: list[_Item], datastore_wins: bool | None, attempt: int = 0) -> None:
    """Commit one chunk; on a constraint refusal raise save()'s error; on a concurrent change, fall back."""
    created = {item.doc for item in chunk if item.created}
    checks: list[Check] = []
    owners: list[tuple[_Item, int]] = []
    ops: list[Op] = []
    for item in chunk:
        for index in _sent(item, created):
            checks.append(item.plan.checks[index])
            owners.append((item, index))
        ops += item.plan.ops
    views = _views(chunk)
    checks += views
    invalidate = [key for item in chunk for key in item.invalidate]
    try:
        result = context.commit(checks, ops, invalidate)
    except CommitOutcomeUnknownError as exc:
        for item in chunk:  # learnt by each object's next save(), delete() or refresh()
            item.obj._remember_uncertain(exc.commit, item.plan.raw, item.invalidate, item.save.ours)
        raise
    if result.ok:
        for item in chunk:
            item.obj._saved(context, item.new, result.revision or -1, merged=False, ours=item.save.ours,
                            edited=item.save.edited, raw=item.plan.raw)
        return
    if any(index >= len(owners) for index in result.failed):
        _replan(context, chunk, datastore_wins, attempt, [checks[index] for index in result.failed
                                                          if index >= len(owners)], views)
        return
    failed = [owners[index] for index in result.failed]
    changed = {id(item.obj) for item, index in failed if item.plan.reasons[index].kind == "document"}
    # as in save(): a refusal counts only when the object did not change concurrently; when it did, its
    # unique value or link may be its own, stored by the other writer, which save()'s merge finds
    refused = [(item, index) for item, index in failed if id(item.obj) not in changed]
    if refused:
        _raise_naming(*refused[0])
    # the others first: a changed object may link to a new one among them, which must be stored by then
    rest = [item for item in chunk if id(item.obj) not in changed]
    if rest:
        try:
            _commit_again(context, rest, datastore_wins, 0)
        except DalError as exc:  # the call stops here, as at any refused commit: say who is left unsaved
            left = ", ".join(_label(item) for item in chunk if id(item.obj) in changed)
            message = exc.args[0] if exc.args else str(exc)
            exc.args = (f"{message} (not saved either, changed by another writer meanwhile: {left})",
                        *exc.args[1:])
            raise
    _save_changed(chunk, changed, datastore_wins)


def _save_changed(chunk: list[_Item], changed: set[int], datastore_wins: bool | None) -> None:
    """Save each object of ``changed`` again with ``save()`` (merged as it merges, with its retries and
    errors), every one even when one is refused; then raise the first refusal, naming the others."""
    refused: list[tuple[_Item, DalError]] = []
    for item in chunk:
        if id(item.obj) in changed:
            try:
                item.obj.save(datastore_wins)
            except DalError as exc:
                refused.append((item, exc))
    if refused:
        (first, error), others = refused[0], refused[1:]
        but = " except " + "; ".join(f"{_label(other)} (refused too: {type(also).__name__}: {also})"
                                     for other, also in others) if others else ""
        _name(error, f"save_many: {_label(first)} refused after another writer changed it (the other objects "
                     f"of its commit were stored{but})")
        raise error


def _replan(context: Context, chunk: list[_Item], datastore_wins: bool | None, attempt: int,
            changed: list[Check], views: dict[Check, list[_Item]]) -> None:
    """Plan the chunk again and commit it: a schema record changed since its creates' view of it."""
    for check in changed:
        stale(context, views[check][0].obj._meta)  # read it again, and check what a create must
    if attempt + 1 >= MAX_ATTEMPTS:
        names = sorted({type(item.obj).__name__ for check in changed for item in views[check]})
        raise RaceConditionError(f"save_many: the schema records of {', '.join(names)} kept changing while "
                                 "their objects were saved; nothing of this commit was written: retry")
    _commit_again(context, chunk, datastore_wins, attempt + 1)


def _commit_again(context: Context, items: list[_Item], datastore_wins: bool | None, attempt: int) -> None:
    """Plan ``items`` again and commit them, packed again: a plan from a fresh view may need more
    checks (a one-to-one relation no longer ready) than the chunk they came in could hold."""
    replanned = [_plan(context, item.obj, datastore_wins) for item in items]
    kept = [item for item in replanned if item is not None]
    for again in _pack(_ordered(kept, after="this commit"), after="this commit"):
        _commit(context, again, datastore_wins, attempt)
