"""One worker of the randomized history test: random operations on RhItem/RhGroup, each logged.

Started with multiprocessing's "spawn" context by tests/test_random_histories.py (so everything
here is module level). Each operation is one JSON line in the worker's log: what it did, what it
read or stored (revision and document), the revision its commit got, and when it began and
ended by ``time.monotonic()`` (one clock for every process of the machine).
tests/history_check.py replays the logs of all workers afterwards.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from history_hybrids import RhGroup, RhItem

from dal import DataList, configure, save_many
from dal.config import Context
from dal.exceptions import ConcurrencyError, DalError, ObjectNotFoundError
from dal.objects.transaction import decode

#: the stored fields of an item the history records
FIELDS = ["code", "color", "tags", "a", "b", "group_guid", "peer_guid"]
CODES = [f"c{i}" for i in range(6)]
COLORS = ["red", "green", "blue"]
#: operations and their weights; 30 % of the time one of SPECIAL instead
WEIGHTED = {"create": 8, "load": 25, "modify": 25, "relink": 10, "delete": 3, "gcreate": 2, "gdelete": 2,
            "query": 10, "reverse": 8, "listall": 3}
SPECIAL = ["hmodify", "hmodify", "iterate", "riterate", "refresh", "savemany", "hdelete"]
#: objects a worker keeps in memory (loaded, iterated) to save or refresh later
HELD = 12

_last = threading.local()


@dataclass(frozen=True)
class Plan:
    """What one worker does, and where it writes its log."""

    persistent: str
    volatile: str
    namespace: str
    worker: int
    seconds: float
    max_ops: int
    out: str
    seed: int


@contextlib.contextmanager
def commit_spy() -> Iterator[None]:
    """Record the revision of each successful commit of this thread (``last_commit()``) meanwhile."""
    original = Context.commit

    def spied(self: Context, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if result.ok:
            _last.rev = result.revision
        return result

    Context.commit = spied  # type: ignore[method-assign]
    try:
        yield
    finally:
        Context.commit = original  # type: ignore[method-assign]


def last_commit() -> int | None:
    """Return the revision of this thread's last successful commit since ``forget_commit()``."""
    return getattr(_last, "rev", None)


def forget_commit() -> None:
    _last.rev = None


def document_of(obj: Any) -> dict[str, Any] | None:
    """Return the stored fields of ``obj`` as it was loaded or saved (None when never stored)."""
    if obj._raw is None:
        return None
    stored = decode(obj._raw)
    return {field: stored.get(field) for field in FIELDS}


def object_read(obj: Any) -> dict[str, Any]:
    return {"guid": obj.guid, "rev": obj._revision, "doc": document_of(obj)}


def run(plan: Plan) -> None:
    """Configure dal, work until ``plan.seconds`` have passed or ``plan.max_ops`` are done; log each."""
    configure(plan.persistent, plan.volatile, namespace=plan.namespace)
    with commit_spy(), open(plan.out, "w") as log:
        worker = Worker(plan)
        deadline = time.monotonic() + plan.seconds
        while time.monotonic() < deadline and worker.count < plan.max_ops:
            record = worker.one()
            if record is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()


class Worker:
    """The state of one worker: its random generator, the guids it knows, the objects it holds."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rnd = random.Random(plan.seed)
        self.items: set[str] = set(DataList(RhItem).guids)
        self.groups: set[str] = set(DataList(RhGroup).guids)
        self.held: dict[str, Any] = {}
        self.count = 0

    def pick(self, pool: set[str] | dict[str, Any]) -> str | None:
        return self.rnd.choice(sorted(pool)) if pool else None

    def one(self) -> dict[str, Any] | None:
        """Do one random operation; return its record, or None when it had nothing to work on."""
        self.count += 1
        op = self.rnd.choices(list(WEIGHTED), list(WEIGHTED.values()))[0]
        if self.rnd.random() < 0.3:
            op = self.rnd.choice(SPECIAL)
        record: dict[str, Any] = {"w": self.plan.worker, "op": op}
        forget_commit()
        record["start"] = time.monotonic()
        try:
            if getattr(self, f"op_{op}")(record) is False:
                return None
            record["ok"] = True
        except DalError as exc:
            self.failed(op, record, exc)
        except Exception as exc:
            record.update(ok=False, err="UNTYPED:" + type(exc).__name__, msg=traceback.format_exc()[-1500:])
        record["end"] = time.monotonic()
        return record

    def failed(self, op: str, record: dict[str, Any], exc: DalError) -> None:
        gone = record.get("guid") and "rev" not in record and record.get("base_rev") is None
        if isinstance(exc, ObjectNotFoundError) and gone:
            (self.groups if op in ("gdelete", "reverse", "riterate") else self.items).discard(record["guid"])
        if op == "hmodify" and not isinstance(exc, ConcurrencyError):
            self.held.pop(record.get("guid", ""), None)
        record.update(ok=False, err=type(exc).__name__, msg=str(exc)[:300])
        if last_commit() is not None:
            record["crev"] = last_commit()

    def changes(self, obj: Any, fields: list[str] | None = None) -> tuple[dict[str, Any], bool | None]:
        """Change one or two random fields of ``obj`` (tags sometimes in place); return them and a
        random ``datastore_wins`` (None for an increment of the counter ``a``)."""
        changes: dict[str, Any] = {}
        dsw = self.rnd.choice([None, True, False])
        names = ["code", "color", "tags", "b", "a", "rel"]
        fields = fields or self.rnd.sample(names, self.rnd.choice([1, 2]))
        for field in fields:
            if field == "tags" and self.rnd.random() < 0.5:
                obj.tags.append(self.rnd.choice(["x", "y", "z"]))  # in place
                changes["tags"] = list(obj.tags)
            elif field == "a":
                changes["a"], dsw = obj.a + 1, None
            else:
                key, value = self.value(field)
                changes[key] = value
        for key, value in changes.items():
            if key != "tags" or obj.tags != value:
                setattr(obj, key, value)
        return changes, dsw

    def value(self, field: str) -> tuple[str, Any]:
        """Return a random new value of ``field`` (``rel``: the group relation) as (key, value)."""
        if field == "code":
            return "code", self.rnd.choice([*CODES, None])
        if field == "color":
            return "color", self.rnd.choice(COLORS)
        if field == "tags":
            return "tags", sorted(self.rnd.sample(["x", "y", "z"], self.rnd.randint(0, 2)))
        if field == "b":
            return "b", self.rnd.randint(0, 3)
        return "group_guid", self.rnd.choice([*sorted(self.groups), None]) if self.groups else None

    # --- the operations: each fills in its record; False when it had nothing to work on ----------

    def op_create(self, record: dict[str, Any]) -> None:
        obj = RhItem()
        obj.code = self.rnd.choice([*CODES, None, None])
        obj.color = self.rnd.choice(COLORS)
        if self.groups and self.rnd.random() < 0.6:
            obj.group_guid = self.pick(self.groups)
        if self.groups and self.rnd.random() < 0.4:
            obj.peer_guid = self.pick(self.groups)
        record["guid"] = obj.guid
        obj.save()
        self.items.add(obj.guid)
        record.update(rev=obj._revision, doc=document_of(obj), crev=last_commit())

    def op_load(self, record: dict[str, Any]) -> bool | None:
        guid = record["guid"] = self.pick(self.items)
        if guid is None:
            return False
        obj = RhItem(guid)
        record.update(rev=obj._revision, doc=document_of(obj))
        if len(self.held) < HELD and self.rnd.random() < 0.3:
            self.held[guid] = obj
        return None

    def op_modify(self, record: dict[str, Any]) -> bool | None:
        return self.load_and_save(record, relink=False)

    def op_relink(self, record: dict[str, Any]) -> bool | None:
        return self.load_and_save(record, relink=True)

    def load_and_save(self, record: dict[str, Any], relink: bool) -> bool | None:
        """Load an item, change fields (``relink``: its relations), wait a little, save it."""
        guid = record["guid"] = self.pick(self.items)
        if guid is None:
            return False
        obj = RhItem(guid)
        record.update(base_rev=obj._revision, base_doc=document_of(obj), lend=time.monotonic())
        dsw = self.rnd.choice([None, True, False])
        changes: dict[str, Any] = {}
        if not relink:
            for field in self.rnd.sample(["code", "color", "tags", "b", "a"], self.rnd.choice([1, 2])):
                if field == "a":
                    changes["a"], dsw = obj.a + 1, None
                else:
                    changes[field] = self.value(field)[1]
        else:
            groups = [*sorted(self.groups), None]
            if self.rnd.random() < 0.7:
                changes["group_guid"] = self.rnd.choice(groups) if self.groups else None
            if self.rnd.random() < 0.5 or not changes:
                changes["peer_guid"] = self.rnd.choice(groups) if self.groups else None
        for key, value in changes.items():
            setattr(obj, key, value)
        record.update(changes=changes, dsw=dsw)
        time.sleep(self.rnd.random() * 0.004)
        obj.save(datastore_wins=dsw)
        record.update(rev=obj._revision, doc=document_of(obj), crev=last_commit())
        return None

    def op_delete(self, record: dict[str, Any]) -> bool | None:
        guid = record["guid"] = self.pick(self.items)
        if guid is None:
            return False
        obj = RhItem(guid)
        record["base_rev"] = obj._revision
        obj.delete()
        record["crev"] = last_commit()
        return None

    def op_gcreate(self, record: dict[str, Any]) -> None:
        obj = RhGroup(data={"label": f"w{self.plan.worker}-{self.count}"})
        record["guid"] = obj.guid
        obj.save()
        self.groups.add(obj.guid)
        record.update(rev=obj._revision, crev=last_commit())

    def op_gdelete(self, record: dict[str, Any]) -> bool | None:
        guid = record["guid"] = self.pick(self.groups)
        if guid is None:
            return False
        obj = RhGroup(guid)
        abandon = record["abandon"] = self.rnd.choice([None, ["items", "item_one"], ["_all"]])
        obj.delete(abandon=abandon)
        record["crev"] = last_commit()
        return None

    def op_hmodify(self, record: dict[str, Any]) -> bool | None:
        """Save a held object again: its revision may be far behind, and a failed save of it earlier
        left its changes unsaved (``dirty``), which this save carries along (an unsaved increment
        of ``a`` with ``datastore_wins=None``, like every increment, so the counter counts them)."""
        guid = self.pick(self.held)
        if guid is None:
            return False
        obj = self.held[guid]
        base = document_of(obj)
        record.update(guid=guid, held=True, base_rev=obj._revision, base_doc=base, lend=time.monotonic())
        dirty = {k: getattr(obj, k) for k in FIELDS if base and getattr(obj, k) != base[k]}
        changes, dsw = self.changes(obj)
        if "a" in dirty:
            dsw = None  # an increment: with a winner, a concurrent one would be dropped, not refused
        record.update(changes={**dirty, **changes}, dsw=dsw)
        before = json.dumps([obj._revision, document_of(obj), {k: getattr(obj, k) for k in FIELDS}])
        try:
            obj.save(datastore_wins=dsw)
        except DalError:
            after = json.dumps([obj._revision, document_of(obj), {k: getattr(obj, k) for k in FIELDS}])
            if after != before:
                record["NOT_AS_IT_WAS"] = [before, after]
            raise
        record.update(rev=obj._revision, doc=document_of(obj), crev=last_commit())
        return None

    def op_hdelete(self, record: dict[str, Any]) -> bool | None:
        guid = self.pick(self.held)
        if guid is None:
            return False
        obj = self.held.pop(guid)
        record.update(guid=guid, held=True, base_rev=obj._revision)
        obj.delete()
        record["crev"] = last_commit()
        return None

    def op_refresh(self, record: dict[str, Any]) -> bool | None:
        guid = record["guid"] = self.pick(self.held)
        if guid is None:
            return False
        obj = self.held[guid]
        obj.refresh()
        doc = document_of(obj)
        record.update(rev=obj._revision, doc=doc)
        record["dirty"] = {k: getattr(obj, k) for k in FIELDS if doc and getattr(obj, k) != doc[k]}
        return None

    def op_iterate(self, record: dict[str, Any]) -> None:
        color = record["color"] = self.rnd.choice(COLORS)
        found = DataList(RhItem, {"items": [("color", "EQUALS", color)]})
        if self.rnd.random() < 0.5:
            record["len"] = len(found)
        self.iterated(record, found)

    def op_riterate(self, record: dict[str, Any]) -> bool | None:
        guid = record["guid"] = self.pick(self.groups)
        if guid is None:
            return False
        self.iterated(record, RhGroup(guid).items)
        return None

    def iterated(self, record: dict[str, Any], found: Any) -> None:
        record["objs"] = []
        for obj in found:
            record["objs"].append(object_read(obj))
            if len(self.held) < HELD:
                self.held[obj.guid] = obj
        record["result"] = sorted(read["guid"] for read in record["objs"])

    def op_savemany(self, record: dict[str, Any]) -> None:
        objs = [RhItem(guid) for guid in self.rnd.sample(sorted(self.items), min(2, len(self.items)))]
        subs = record["sub"] = [{"guid": o.guid, "base_rev": o._revision, "base_doc": document_of(o)}
                                for o in objs]
        record["lend"] = time.monotonic()
        dsw = record["dsw"] = self.rnd.choice([None, True, False])
        for obj, sub in zip(objs, subs, strict=True):
            sub["changes"] = self.changes(obj, [self.rnd.choice(["color", "b", "tags", "code"])])[0]
        try:
            save_many(objs, datastore_wins=dsw)
        finally:
            for obj, sub in zip(objs, subs, strict=True):
                sub.update(rev=obj._revision, doc=document_of(obj))

    def op_query(self, record: dict[str, Any]) -> None:
        color = record["color"] = self.rnd.choice(COLORS)
        record["result"] = sorted(DataList(RhItem, {"items": [("color", "EQUALS", color)]}).guids)

    def op_reverse(self, record: dict[str, Any]) -> bool | None:
        guid = record["guid"] = self.pick(self.groups)
        if guid is None:
            return False
        group = RhGroup(guid)
        record.update(grev=group._revision, result=sorted(group.items_guids), one=group.item_one_guid)
        return None

    def op_listall(self, record: dict[str, Any]) -> None:
        record["result"] = sorted(DataList(RhItem).guids)
        self.items.update(record["result"])
        self.groups.update(DataList(RhGroup).guids)

