"""The durable queue of dynamics to compute, and ``prefetch``, which computes them.

The queue lives in the durable store, one key per queued dynamic,
``<namespace>/m/cachequeue/<hybrid>/<guid>/<dynamic>``, written only where absent (a check in the
same commit), so a dynamic is queued once however many processes queue it. Its order is the
insertion order: the revision of the commit that queued it, then its place in that commit.

:func:`prefetch` reads each queued dynamic as any caller does (``getattr(obj, name)``): a locked
dynamic takes its single-flight lock, so concurrent prefetchers, or a prefetcher and a user,
compute it once; a value cached already is not computed again. A dynamic is removed from the
queue once read; a loader that raises is reported and stays queued. A queued dynamic the model
does not declare (its hybrid, or the dynamic: another model's, or written by hand) is skipped and
reported, and stays queued for a process of a model that declares it; ``dal check`` reports it too,
and ``dal check --repair`` removes it when its hybrid is undeclared and holds no document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dal.backends.base import Check, Delete, DeletePrefix, Exists, Put, Revision
from dal.backends.etcd import TXN_OPS
from dal.config import Context
from dal.exceptions import DalError, ObjectNotFoundError
from dal.model.registry import hybrids
from dal.objects.dataobject import DataObject
from dal.query.datalist import DataList
from dal.tools.cache.listing import check_dynamic, registered

#: queued dynamics written (or removed) in one commit: each is one put and one check, and etcd
#: refuses a transaction of more of either than its --max-txn-ops (128 by default); the journal
#: adds one of each to an add's commit (its record, checked absent), and takes nothing along to one
#: this large
BATCH = TXN_OPS - 1
#: seconds after which a prefetcher's claim on a queued dynamic is taken to be abandoned
CLAIM_TTL = 600.0


@dataclass(frozen=True, slots=True, order=True)
class Queued:
    """One queued dynamic: ``hybrid``'s object ``guid``, dynamic ``dynamic``."""

    hybrid: str
    guid: str
    dynamic: str


@dataclass
class Prefetched:
    """What :func:`prefetch` did: dynamics computed (or found cached), gone, failed with their error,
    and skipped, left queued, as the model does not declare them."""

    done: list[Queued] = field(default_factory=list)
    gone: list[Queued] = field(default_factory=list)
    failed: list[tuple[Queued, str]] = field(default_factory=list)
    undeclared: list[Queued] = field(default_factory=list)


def _prefix(context: Context) -> str:
    return context.keys.cache_queue()


def _key(context: Context, item: Queued) -> str:
    return f"{_prefix(context)}{item.hybrid}/{item.guid}/{item.dynamic}"


def queue(context: Context, hybrid: str, dynamic: str, where: Mapping[str, Any] | None = None) -> int:
    """Queue ``dynamic`` of every object of ``hybrid`` (those whose fields equal ``where``'s values).

    Return how many were added: one already queued is not queued again.
    """
    if where is not None and not isinstance(where, Mapping):
        raise DalError(f"where must map field names to values ({{'level': 1}}), not {where!r}")
    cls = registered(hybrid)
    meta = cls._meta
    check_dynamic(meta, dynamic)
    query = {"type": DataList.where_operator.AND,
             "items": [(name, DataList.operator.EQUALS, value) for name, value in (where or {}).items()]}
    guids = list(DataList(cls, query).guids) if where else list(DataList(cls).guids)
    return add(context, [Queued(meta.name, guid, dynamic) for guid in guids])


def add(context: Context, items: list[Queued]) -> int:
    """Queue ``items`` in their order, skipping those queued already; return how many were added.

    One commit per :data:`BATCH` items: a failure (raised) leaves those of the commits before it
    queued; adding the same items again adds only the rest.
    """
    _check_items(items)
    added = 0
    for start in range(0, len(items), BATCH):
        batch = list(dict.fromkeys(items[start:start + BATCH]))
        while batch:
            keys = [_key(context, item) for item in batch]
            ops = [Put(key, json.dumps({"n": index}).encode()) for index, key in enumerate(keys)]
            # through the journal: on etcd, a refusal answered to a resend is fenced, so the unanswered
            # first send never queues anew what a prefetcher has taken off since
            result = context.commit([Revision(key, 0) for key in keys], ops)
            if result.ok:
                added += len(batch)
                break
            failed = set(result.failed)  # queued already (by us earlier, or by another process)
            batch = [item for index, item in enumerate(batch) if index not in failed]
    return added


def queued(context: Context) -> list[Queued]:
    """Return the queued dynamics in insertion order."""
    prefix = _prefix(context)
    found: list[tuple[int, int, Queued]] = []
    for key, entry in context.persistent.scan(prefix):
        parts = key[len(prefix):].split("/", 2)
        if len(parts) == 3 and all(parts):  # another key there is no queued dynamic (`dal check` says so)
            found.append((entry.revision, _place(entry.value), Queued(*parts)))
    return [item for _, _, item in sorted(found)]


def _place(value: bytes) -> int:
    """Return a queued dynamic's place in the commit that queued it (0 when its value does not say)."""
    try:
        place = json.loads(value).get("n", 0)
    except (ValueError, AttributeError):
        return 0
    return place if isinstance(place, int) else 0


def remove(context: Context, items: list[Queued]) -> None:
    """Take ``items`` off the queue, one commit per :data:`BATCH` items: a failure (raised) leaves
    those of the commits before it removed and the rest queued; removing them again removes the rest."""
    _check_items(items)
    for start in range(0, len(items), BATCH):
        context.persistent.commit([], [Delete(_key(context, item)) for item in items[start:start + BATCH]])


def _check_items(items: Sequence[Queued]) -> None:
    """Refuse, before any commit, ``items`` that are not a list (or tuple) of :class:`Queued`."""
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, Queued) for item in items):
        raise DalError(f"queue items are a list of Queued(hybrid, guid, dynamic) (what queued() returns), "
                       f"not {items!r}")


def _claim_key(context: Context, item: Queued) -> str:
    return f"{context.keys.root}m/cacheclaims/{item.hybrid}/{item.guid}/{item.dynamic}"


def _claim(context: Context, item: Queued) -> bool:
    """Take ``item`` for this prefetcher: still queued, and unclaimed or claimed more than CLAIM_TTL
    seconds ago (one commit).

    Still queued is part of the claim: another prefetcher may have listed the queue, claimed, computed
    and released the item (its claim and its queue entry) since this one listed it; a claim of an
    absent claim key alone would then compute it again (a dynamic is not always cached by the first
    computation: a process not yet caught up with the journal computes without filling).
    """
    key = _claim_key(context, item)
    held = context.persistent.get(key)
    if held is not None and time.time() - float(json.loads(held.value)) < CLAIM_TTL:
        return False
    checks: list[Check] = [Revision(key, held.revision if held is not None else 0),
                           Exists(_key(context, item))]
    return context.commit(checks, [Put(key, json.dumps(time.time()).encode())]).ok  # fenced, as in add()


def _release(context: Context, item: Queued, *, done: bool) -> None:
    ops: list[Delete] = [Delete(_claim_key(context, item))]
    if done:
        ops.append(Delete(_key(context, item)))
    context.persistent.commit([], ops)


def clear(context: Context) -> int:
    """Empty the queue; return how many dynamics it held."""
    count = len(queued(context))
    context.persistent.commit([], [DeletePrefix(_prefix(context))])
    return count


def prefetch(context: Context, workers: int = 4,
             progress: Callable[[Queued], None] | None = None,
             items: Sequence[Queued] | None = None) -> Prefetched:
    """Compute every queued dynamic with at most ``workers`` at once; each is dequeued once read.

    Each is claimed first in the durable store (one conditional commit), so concurrent prefetchers
    share the queue instead of computing an entry twice; a claim older than CLAIM_TTL is taken over.

    ``progress`` is called after each dynamic, whatever its outcome. ``items`` are the queued
    dynamics as :func:`queued` listed them (to count them first without a second listing); by
    default the queue is listed now. One no longer queued by the time it is claimed is skipped, and
    so is one the model does not declare (left queued, listed in ``undeclared``).
    """
    if type(workers) is not int or workers < 1:
        raise DalError(f"workers must be a whole number 1 or more, not {workers!r}")
    outcome = Prefetched()
    metas = {cls._meta.name: cls._meta for cls in hybrids.all()}

    def one(item: Queued) -> None:
        meta = metas.get(item.hybrid)
        if meta is None or item.dynamic not in meta.dynamics:
            outcome.undeclared.append(item)
        elif _claim(context, item):  # else another prefetcher has it
            _compute(context, meta.cls, item, outcome)
        if progress is not None:
            progress(item)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(one, item) for item in (queued(context) if items is None else items)]:
            future.result()
    return outcome


def _compute(context: Context, cls: type[DataObject], item: Queued, outcome: Prefetched) -> None:
    """Read one claimed dynamic, note the outcome, and release it (dequeued unless its loader failed)."""
    try:
        obj = cls(item.guid)
        getattr(obj, item.dynamic)
    except ObjectNotFoundError:
        outcome.gone.append(item)
        _release(context, item, done=True)
    except Exception as exc:  # a loader's failure: reported, and the dynamic stays queued
        outcome.failed.append((item, f"{type(exc).__name__}: {exc}"))
        _release(context, item, done=False)
    else:
        outcome.done.append(item)
        _release(context, item, done=True)
