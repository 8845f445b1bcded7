"""``dal.save_many(objects)``: several new or changed objects in as few commits as the store allows.

Each object is planned as ``save()`` plans it (:func:`dal.objects.transaction.plan_write`: document,
unique keys, index entries, links, the checks guarding them); the plans are packed into commits of
at most :data:`MAX_OPS` operations and as many checks (etcd's default ``--max-txn-ops``), each one
atomic. A commit never holds two plans touching one key (two new objects claiming one unique value
go to two commits, so the second is refused as a save would be). A link to an object created in
the same commit needs no existence check: both land together or neither does.

A commit refused on a constraint (a unique value taken, a missing target, a one-to-one link taken)
raises the error ``save()`` raises, naming the object; nothing of that commit is written, and the
commits before it stay written. A commit refused because an object changed concurrently saves
those objects one by one with ``save()`` (its merge rules and errors), then the others together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dal.backends.base import Check, Exists, Op, Put
from dal.config import Context, current
from dal.exceptions import CommitOutcomeUnknownError, DalError, InvalidValueError
from dal.objects.refusals import check_datastore_wins
from dal.objects.schema import onetoone_ready
from dal.objects.transaction import Document, Plan
from dal.objects.writes import Writes, _Save
from dal.values import safe_repr

#: operations (and, separately, checks) per commit: etcd refuses more by default; one is the journal's
MAX_OPS = 127


@dataclass
class _Item:
    obj: Any
    plan: Plan
    new: Document
    save: _Save
    created: bool
    invalidate: list[str] = field(default_factory=list)

    def keys(self) -> set[str]:
        return {getattr(op, "key", getattr(op, "prefix", "")) for op in self.plan.ops} | \
            {getattr(check, "key", getattr(check, "prefix", "")) for check in self.plan.checks}


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
    for obj in objects:
        if id(obj) not in seen:
            seen.add(id(obj))
            item = _plan(context, obj, datastore_wins)
            if item is not None:
                items.append(item)
    # objects created here that others link to go first, so a commit never waits for a later one
    linked = {item.new.get(relation.guid_field) for item in items
              for relation in item.obj._meta.relations.values()}
    items.sort(key=lambda item: not (item.created and item.obj.guid in linked))
    for chunk in _pack(context, items):
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


def _pack(context: Context, items: list[_Item]) -> list[list[_Item]]:
    """Split the plans into commits within MAX_OPS, no two plans of one commit touching one key."""
    chunks: list[list[_Item]] = []
    current_chunk: list[_Item] = []
    ops = checks = 0
    keys: set[str] = set()
    created: set[str] = set()  # the documents of the objects the chunk creates
    for item in items:
        touched = item.keys()
        # an Exists check of a target created in this commit is no clash
        mine = touched - created
        if current_chunk and (ops + len(item.plan.ops) > MAX_OPS or checks + len(item.plan.checks) > MAX_OPS
                              or mine & keys):
            chunks.append(current_chunk)
            current_chunk, ops, checks, keys, created = [], 0, 0, set(), set()
        current_chunk.append(item)
        ops, checks = ops + len(item.plan.ops), checks + len(item.plan.checks)
        keys |= touched
        if item.created:
            created.add(context.keys.doc(item.obj._meta.name, item.obj.guid))
    if current_chunk:
        chunks.append(current_chunk)
    return chunks


def _commit(context: Context, chunk: list[_Item], datastore_wins: bool | None) -> None:
    """Commit one chunk; on a constraint refusal raise save()'s error; on a concurrent change, fall back."""
    put = {op.key for item in chunk if item.created for op in item.plan.ops[:1] if isinstance(op, Put)}
    checks: list[Check] = []
    owners: list[tuple[_Item, int]] = []
    ops: list[Op] = []
    for item in chunk:
        for index, (check, reason) in enumerate(zip(item.plan.checks, item.plan.reasons, strict=True)):
            if reason.kind == "target" and isinstance(check, Exists) and check.key in put:
                continue  # created in this very commit
            checks.append(check)
            owners.append((item, index))
        ops += item.plan.ops
    invalidate = [key for item in chunk for key in item.invalidate]
    try:
        result = context.commit(checks, ops, invalidate)
    except CommitOutcomeUnknownError as exc:
        for item in chunk:  # learnt by each object's next save(), delete() or refresh()
            item.obj._remember_uncertain(exc.commit, item.plan.raw, item.invalidate, item.save.ours)
        raise
    if result.ok:
        for item in chunk:
            item.obj._saved(context, item.new, result.revision or -1, merged=False, raw=item.plan.raw)
        return
    failed = [owners[index] for index in result.failed]
    refused = [(item, index) for item, index in failed if item.plan.reasons[index].kind != "document"]
    if refused:
        item, index = refused[0]
        _raise_naming(item, index)
    changed = {id(item.obj) for item, _ in failed}
    for item in chunk:
        if id(item.obj) in changed:
            item.obj.save(datastore_wins)  # merged as save() merges, with its retries and errors
    rest = [item for item in chunk if id(item.obj) not in changed]
    if rest:
        replanned = [_plan(context, item.obj, datastore_wins) for item in rest]
        _commit(context, [item for item in replanned if item is not None], datastore_wins)


def _raise_naming(item: _Item, index: int) -> None:
    """Raise the error save() raises for this refusal, naming the object it refused."""
    obj = item.obj
    try:
        obj._raise_constraint(item.plan, [index])
    except DalError as exc:
        exc.args = (f"save_many: {type(obj).__name__} {obj.guid} refused, nothing of its commit written: "
                    f"{exc.args[0] if exc.args else exc}", *exc.args[1:])
        raise
