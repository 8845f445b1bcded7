"""The objects of a ``dal.save_many`` call as planned, and the order of their commits.

A new object goes in the commit of the objects linking to it or an earlier one, new objects linking
to each other in a cycle share one commit, and an object giving up a unique value or a one-to-one
target goes in a commit before the one of the object taking it. Where these cannot all hold (two
objects swapping values, or a giver that links to the new object taking its value), the call is
refused before anything is written, with the error ``save()`` of the taker raises.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from dal.backends.base import Delete, Exists, Put, Revision
from dal.exceptions import DalError
from dal.objects.transaction import Document, Plan
from dal.objects.views import SCHEMA
from dal.objects.writes import _Save


@dataclass
class _Item:
    obj: Any
    plan: Plan
    new: Document
    save: _Save
    created: bool
    invalidate: list[str] = field(default_factory=list)

    @property
    def doc(self) -> str:
        """The key of the object's document: the plan's first op writes it."""
        return self.plan.ops[0].key if isinstance(self.plan.ops[0], Put) else ""

    @property
    def size(self) -> int:
        """Bytes of the keys and values the plan writes (keys are ASCII: their length is their size)."""
        return sum(len(op.key) + len(op.value) if isinstance(op, Put) else len(getattr(op, "key", ""))
                   for op in self.plan.ops)

    def keys(self) -> set[str]:
        """The keys the plan writes or claims. Not those it only checks exist: that check holds whatever
        another plan of the commit writes there (an existing target stays; one created alongside is not
        checked), so a link never keeps its target out of its commit."""
        return {getattr(op, "key", getattr(op, "prefix", "")) for op in self.plan.ops} | \
            {getattr(check, "key", getattr(check, "prefix", "")) for check, reason in
             zip(self.plan.checks, self.plan.reasons, strict=True)
             if not isinstance(check, Exists) and reason is not SCHEMA}  # every create checks the record


#: for each group, the groups giving up what it takes: giver -> (taker item, its check index, giver item)
_Takes = list[dict[int, tuple[_Item, int, _Item]]]


def _targets(item: _Item) -> dict[int, str]:
    """The existence checks of the plan's link targets: check index -> the target's document key."""
    return {index: check.key for index, (check, reason) in enumerate(zip(item.plan.checks, item.plan.reasons,
                                                                          strict=True))
            if reason.kind == "target" and isinstance(check, Exists)}


def _ordered(items: list[_Item], after: str = "") -> list[list[_Item]]:
    """Group the items into the cycles of new objects linking to each other (one item where there is none),
    each group after the groups of the new objects it links to, and otherwise in the listed order.

    A group shares one commit, and follows its targets into the same commit or a later one, so no commit
    checks for a document a later commit creates (Tarjan's strongly connected components, which come
    out targets first; iterative, as a long chain would pass Python's recursion limit). ``after``: as
    for _pack, when ordering again what a commit of the call refused.
    """
    created = {item.doc: number for number, item in enumerate(items) if item.created}
    targets = [[created[key] for key in _targets(item).values() if key in created] for item in items]
    order: dict[int, int] = {}  # when each item was first reached
    low: dict[int, int] = {}  # the earliest item, still unplaced, reached from it
    stack: list[int] = []
    unplaced: set[int] = set()  # the items on the stack
    members: list[list[int]] = []  # the groups, as the indexes of their items
    for root in range(len(items)):
        if root in order:
            continue
        work = [(root, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                order[node] = low[node] = len(order)
                stack.append(node)
                unplaced.add(node)
            if edge < len(targets[node]):
                work.append((node, edge + 1))
                target = targets[node][edge]
                if target not in order:
                    work.append((target, 0))
                elif target in unplaced:
                    low[node] = min(low[node], order[target])
                continue
            if low[node] == order[node]:
                group = [stack.pop()]
                while group[-1] != node:
                    group.append(stack.pop())
                unplaced.difference_update(group)
                members.append(sorted(group))
            if work:  # back in the item that linked to this one
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return _givers_first(items, members, targets, after)


def _givers_first(items: list[_Item], members: list[list[int]], targets: list[list[int]],
                  after: str) -> list[list[_Item]]:
    """Put each group giving up a unique value or a one-to-one target (deleting its key) before the groups
    taking it (checking the key absent), still after the groups of the new objects it links to; otherwise
    keep the order. A handover then commits whatever order it is listed in: the giver's commit first.
    ``members``: the items of each group, as _ordered placed them; ``targets``: the items each links to.
    """
    groups = [[items[member] for member in group] for group in members]
    given = {op.key: (number, item) for number, group in enumerate(groups) for item in group
             for op in item.plan.ops if isinstance(op, Delete)}
    takes: _Takes = [{} for _ in groups]
    for number, group in enumerate(groups):
        for item in group:
            for index, (check, reason) in enumerate(zip(item.plan.checks, item.plan.reasons, strict=True)):
                if isinstance(check, Revision) and reason.kind in ("unique", "onetoone") and \
                        check.key in given and given[check.key][0] != number:
                    giver, by = given[check.key]
                    takes[number].setdefault(giver, (item, index, by))
    if not any(takes):
        return groups
    # _ordered's own links, each to an earlier group (of two copies of a new object, to the one it chose)
    group_of = {member: number for number, group in enumerate(members) for member in group}
    links = [{group_of[target] for member in group for target in targets[member]} - {number}
             for number, group in enumerate(members)]
    return [groups[number] for number in _sorted(links, takes, after)]


def _sorted(links: list[set[int]], takes: _Takes, after: str) -> list[int]:
    """Order the groups each after those of ``links`` (new targets: earlier groups, as _ordered placed
    them) and those of ``takes``, the lowest number first among the ready; refuse a cycle of the two."""
    before = [linked | set(taken) for linked, taken in zip(links, takes, strict=True)]
    waits = [len(earlier) for earlier in before]
    nexts: list[list[int]] = [[] for _ in before]
    for number, earlier in enumerate(before):
        for first in earlier:
            nexts[first].append(number)
    ready = [number for number, wait in enumerate(waits) if not wait]  # ascending: a heap
    placed: list[int] = []
    while ready:
        number = heapq.heappop(ready)
        placed.append(number)
        for later in nexts[number]:
            waits[later] -= 1
            if not waits[later]:
                heapq.heappush(ready, later)
    if len(placed) < len(before):
        _refuse_cycle(before, takes, set(range(len(before))) - set(placed), after)
    return placed


def _refuse_cycle(before: list[set[int]], takes: _Takes, left: set[int], after: str) -> None:
    """Raise the error ``save()`` of a taker raises, for a cycle among the groups ``left`` unplaced.

    Each of them waits for another of them, so walking back from one meets a cycle; links alone make
    none (each points to an earlier group), so one of its steps is a handover taken before it is given.
    """
    path: list[int] = []
    seen: dict[int, int] = {}
    number = min(left)
    while number not in seen:
        seen[number] = len(path)
        path.append(number)
        number = min(before[number] & left)
    cycle = path[seen[number]:]
    written = f"nothing of {after} written (those before it were)" if after else \
        "nothing of this call written"
    for later, earlier in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        if earlier in takes[later]:
            taker, index, giver = takes[later][earlier]
            them, it = _label(giver), _label(taker)
            why = f"can only be stored after {it} (through the other links and handovers of the call)"
            if len(cycle) == 2:
                swap = later in takes[earlier]
                why = f"takes what {it} gives up (a swap)" if swap else f"links to new {it}"
            _raise_naming(taker, index, (
                f"refused, {written}: it takes what {them} gives up, so {them} must be stored first, but "
                f"{them} {why}: no order of commits can store both. Give {it} a value or link no object "
                "holds (None, or a temporary one) in this call, and the one it takes in a second call"))
    raise AssertionError(f"save_many: no handover in the cycle {cycle}")  # links alone make no cycle


def _label(item: _Item) -> str:
    return f"{type(item.obj).__name__} {item.obj.guid}"


def _raise_naming(item: _Item, index: int, what: str = "refused, nothing of its commit written") -> None:
    """Raise the error save() raises for this refusal, naming the object it refused."""
    obj = item.obj
    try:
        obj._raise_constraint(item.plan, [index])
    except DalError as exc:
        _name(exc, f"save_many: {_label(item)} {what}")
        raise


def _name(exc: DalError, what: str) -> None:
    """Put ``what`` (which object of the call, and what was written) before ``exc``'s message."""
    exc.args = (f"{what}: {exc.args[0] if exc.args else exc}", *exc.args[1:])
