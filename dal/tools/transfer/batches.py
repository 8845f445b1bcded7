"""Cutting the objects of a load into commits: in dependency order, within the store's limits.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from dal.backends.base import Delete, Put
from dal.keys import Keys
from dal.model.meta import HybridMeta
from dal.objects.transaction import Document, plan_write

#: bytes written per commit, under etcd's default request limit of 1.5 MiB (the rest is room for
#: the commit's journal record, a few dozen bytes per cache key it invalidates)
MAX_BATCH_BYTES = 1 << 20
#: what the commit journal (dal/cache/journal.py) adds to every commit: its record, and the check that
#: the record is new
JOURNAL_COST = 1


@dataclass(frozen=True)
class Item:
    """One validated object to write."""

    meta: HybridMeta
    guid: str
    document: Document
    doc_key: str

    @property
    def label(self) -> str:
        return f"{self.meta.cls.__name__} {self.guid}"


def _costs(keys: Keys, item: Item, replace: bool) -> tuple[int, int, int]:
    """Return the most operations, checks and bytes writing ``item`` can take in one commit.

    Planned with no one-to-one key trusted as complete, so the count includes the link checks a
    store whose keys are not built yet needs.
    """
    plan = plan_write(keys, item.meta, item.guid, None, 0, item.document)
    size = sum(len(op.key) + len(op.value) if isinstance(op, Put) else len(op.key)
               for op in plan.ops if isinstance(op, (Put, Delete)))
    ops = len(plan.ops)
    if replace:
        ops += _replace_deletes(item.meta)
    return ops, len(plan.checks), size


def commit_bytes(keys: Keys, item: Item) -> int:
    """Return the bytes of keys and values writing ``item`` puts in a commit (what MAX_BATCH_BYTES counts)."""
    return _costs(keys, item, False)[2]


def _replace_deletes(meta: HybridMeta) -> int:
    """Return the most deletions of a stored object's old keys plan_write adds when replacing it.

    Read off ``_plan_unique``, ``_plan_indexes`` and ``_plan_relation`` in dal/objects/transaction.py:
    a unique value's old key; an index's old entry and, for a document lacking the field, the entry
    under its default too; a relation's old link and one-to-one key.
    """
    ops = len(meta.unique)
    ops += sum(1 if meta.stored_defaults[prop.name] is None else 2 for prop in meta.indexed)
    ops += sum(2 if relation.onetoone else 1 for relation in meta.relations.values())
    return ops


def dependency_batches(keys: Keys, items: list[Item], replace: bool, batch_size: int,
                       max_ops: int, reserve: int = 0) -> list[list[Item]]:
    """Cut the dependency-ordered objects into commits within the limits, never splitting a component.

    A component larger than the limits becomes one commit of its own: splitting it would
    leave a link to an object not yet written (etcd then refuses it, saying which limit to raise).
    ``reserve``: the operations, and checks, the first commit holds besides its objects.
    """
    batches: list[list[Item]] = []
    current: list[Item] = []
    ops = checks = JOURNAL_COST + reserve
    size = 0
    hybrids: set[str] = set()  # each checks, once per commit, the schema record its creates planned from
    for component in _components(items):
        costs = [_costs(keys, item, replace) for item in component]
        c_ops, c_checks, c_size = (sum(cost[i] for cost in costs) for i in range(3))
        new = {item.meta.name for item in component} - hybrids
        if current and (len(current) + len(component) > batch_size or ops + c_ops > max_ops
                        or checks + c_checks + len(new) > max_ops or size + c_size > MAX_BATCH_BYTES):
            batches.append(current)
            current, ops, checks, size, hybrids = [], JOURNAL_COST, JOURNAL_COST, 0, set()
            new = {item.meta.name for item in component}
        current += component
        hybrids |= new
        ops, checks, size = ops + c_ops, checks + c_checks + len(new), size + c_size
    if current:
        batches.append(current)
    return batches


def _components(items: list[Item]) -> list[list[Item]]:
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
    result: list[list[Item]] = []
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
