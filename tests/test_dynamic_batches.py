"""A batch of objects reads a dynamic's cached values in one multi-get, each served as a read of its own.

A query filtering on a dynamic and ``DataList.serialize()`` read the dynamic of a whole batch of
objects together (``dal.objects.dynamics.read_many``): one ``get_many`` of the volatile store for the
batch, never one ``get`` per object when the values are cached; each value is then checked as
``obj.<dynamic>`` checks it (its revision, its type), and only the misses are computed, each read
again first as a read of its own does. See docs/queries.md and docs/dynamics.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from conftest import round_trips

from dal import DataList, DataObject, Dynamic, Property, Relation
from dal.config import Context
from dal.objects.dynamics_tags import dumps

#: loader calls, by dynamic
CALLS: Counter[str] = Counter()
OBJECTS = 100


class BatchGroup(DataObject):
    __properties: list[Property[Any]] = [Property("name", str)]


class BatchProbe(DataObject):
    __properties: list[Property[Any]] = [Property("name", str), Property("level", int, default=1),
                                         Property("status", ["UP", "DOWN"], default="UP")]
    __relations = [Relation("group", BatchGroup, "probes", mandatory=False)]
    __dynamics = [Dynamic("score", int, 60), Dynamic("tag", str, 60)]

    def _score(self) -> int:
        CALLS["score"] += 1
        return self.level * 10

    def _tag(self) -> str:
        CALLS["tag"] += 1
        return f"{self.name}:{self.status}"


class BatchNode(DataObject):
    """A locked dynamic reading its parent's: computing a child's caches its parent's value."""

    __properties: list[Property[Any]] = [Property("name", str), Property("level", int, default=1)]
    __relations = [Relation("parent", None, "children", mandatory=False)]
    __dynamics = [Dynamic("total", int, 60, locked=True)]

    def _total(self) -> int:
        CALLS[self.name] += 1
        up = self.parent
        return self.level + (up.total if up is not None else 0)


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    CALLS.clear()


def probes(count: int = OBJECTS, group: BatchGroup | None = None) -> list[BatchProbe]:
    made = [BatchProbe(data={"name": f"p{n}", "level": n, "status": "DOWN" if n % 4 == 0 else "UP",
                             "group": group}) for n in range(count)]
    for probe in made:
        probe.save()
    return made


def scored() -> DataList[BatchProbe]:
    return DataList(BatchProbe, {"type": "AND", "items": [("score", "GE", 0)]})


def hits(context: Context, name: str) -> float:
    return context.stats[f"dynamic.{BatchProbe._meta.name}.{name}.hits"]


def test_a_query_on_a_dynamic_reads_the_batch_in_one_multi_get(context: Context,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    probes()
    calls = round_trips(context, monkeypatch)
    assert len(scored()) == OBJECTS
    cold = dict(calls)
    # cold: one multi-get, then each miss read again and filled under its lease, as a read alone
    assert CALLS["score"] == OBJECTS and cold["volatile.get"] == OBJECTS, cold
    assert cold["volatile.get_many"] == 1 and cold["volatile.cas"] == OBJECTS, cold
    calls.clear()
    before = hits(context, "score")
    assert len(scored()) == OBJECTS
    warm = dict(calls)
    assert CALLS["score"] == OBJECTS and hits(context, "score") - before == OBJECTS
    assert "volatile.get" not in warm and warm["volatile.get_many"] == 1, warm
    assert sum(warm.values()) <= 3, warm  # the scan of the documents, the multi-get


def test_a_row_reads_only_the_dynamics_its_conditions_reach(context: Context) -> None:
    probes()
    down = DataList(BatchProbe, {"type": "AND",
                                 "items": [("status", "EQUALS", "DOWN"), ("tag", "CONTAINS", "p")]})
    assert len(down) == OBJECTS // 4
    assert CALLS["tag"] == OBJECTS // 4, "an AND whose first item fails never reads its second"
    either = DataList(BatchProbe, {"type": "OR", "items": [("score", "LT", 50), ("tag", "CONTAINS", "DOWN")]})
    reaching = [n for n in range(OBJECTS) if n >= 5]  # score 50 or more: the OR reads its second item
    assert len(either) == 5 + len([n for n in reaching if n % 4 == 0])
    # the tags of DOWN rows are cached by the first query: only the others compute
    assert CALLS["score"] == OBJECTS and CALLS["tag"] == OBJECTS // 4 + len([n for n in reaching if n % 4])


@pytest.mark.parametrize("depth", [0, 1])
def test_serialize_reads_each_dynamic_of_the_list_in_one_multi_get(context: Context,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   depth: int) -> None:
    group = BatchGroup(data={"name": "g"})
    group.save()
    made = probes(group=group)
    costs = []
    for _ in ("cold", "warm"):
        parent = BatchGroup(group.guid)  # a load of its own, uncounted
        calls = round_trips(context, monkeypatch)
        views = parent.probes.serialize(depth=depth)
        costs.append(dict(calls))
        monkeypatch.undo()
        assert sorted((view["name"], view["score"], view["tag"]) for view in views) == sorted(
            (probe.name, probe.level * 10, f"{probe.name}:{probe.status}") for probe in made)
    cold, warm = costs
    assert CALLS["score"] == CALLS["tag"] == OBJECTS, "each value computed once, then served"
    assert "volatile.get" not in warm, costs
    # each miss read again and filled as a read alone does it
    assert cold["volatile.get"] == cold["volatile.cas"] == 2 * OBJECTS, cold
    # warm: the reverse list's guids, the objects (cache), the group at depth 1, one multi-get per dynamic
    assert sum(warm.values()) <= 6, warm


def test_a_batched_read_refuses_a_value_of_an_older_revision_or_another_type(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    made = probes(10)
    assert len(scored()) == 10  # every value cached
    spec = BatchProbe._meta.dynamics["score"]
    outdated, mistyped = made[3], made[7]
    keys = context.keys
    # a replay of the value of an earlier revision, and one cached by a version declaring another type:
    # either would make its object fail ``score GE 0``
    assert context.dynamics.put(keys.cached_dynamic(BatchProbe._meta.name, outdated.guid, "score"),
                                dumps(-1, outdated._revision - 1, spec.validator.digest), 60)
    assert context.dynamics.put(keys.cached_dynamic(BatchProbe._meta.name, mistyped.guid, "score"),
                                dumps(-1, mistyped._revision, "0" * len(spec.validator.digest)), 60)
    label = f"dynamic.{BatchProbe._meta.name}.score."
    before = {event: context.stats[label + event] for event in ("hits", "outdated", "mistyped", "misses")}
    calls = round_trips(context, monkeypatch)
    assert {probe.name for probe in scored()} == {probe.name for probe in made}
    assert "volatile.get" not in calls and calls["volatile.get_many"] == 1, dict(calls)
    after = {event: context.stats[label + event] - before[event] for event in before}
    assert after == {"hits": 8, "outdated": 1, "mistyped": 1, "misses": 2}, after
    assert CALLS["score"] == 10 + 2, "the two refused values computed again, no other"
    monkeypatch.undo()
    assert BatchProbe(outdated.guid).score == 30 and BatchProbe(mistyped.guid).score == 70, "and replaced"
    assert CALLS["score"] == 12


@pytest.mark.parametrize("read", ["serialize", "query"])
def test_a_value_an_earlier_computation_of_the_batch_cached_is_not_computed_again(context: Context,
                                                                                 read: str) -> None:
    """A child computed before its root caches the root's total, which the multi-get found missing: the
    root's own read must find it, not compute it again. The list is sorted roots last; a query's batch
    is in guid order, where among ten families some root follows a child of its own (but for a chance
    of 0.25 ** 10)."""
    for family in range(10):
        root = BatchNode(data={"name": f"r{family}", "level": 1})
        root.save()
        for n in range(3):
            BatchNode(data={"name": f"k{family}.{n}", "level": 2, "parent": root}).save()
    if read == "serialize":
        ordered = DataList(BatchNode, {"type": "AND", "items": [("level", "GE", 0)]})
        ordered.sort(key=lambda node: node.name.startswith("r"))  # every root after every child
        assert sorted(view["total"] for view in ordered.serialize()) == [1] * 10 + [3] * 30
    else:
        assert len(DataList(BatchNode, {"type": "AND", "items": [("total", "GE", 0)]})) == 40
    assert set(CALLS.values()) == {1} and len(CALLS) == 40, "a locked dynamic is computed once"


def test_a_row_reaching_two_dynamics_builds_its_object_once(context: Context,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    probes(20)
    built: Counter[str] = Counter()
    real = BatchProbe._from_entry.__func__  # type: ignore[attr-defined]

    def counted(cls: Any, guid: str, *args: Any, **kwargs: Any) -> Any:
        built[guid] += 1
        return real(cls, guid, *args, **kwargs)

    monkeypatch.setattr(BatchProbe, "_from_entry", classmethod(counted))
    both = DataList(BatchProbe, {"type": "AND", "items": [("score", "GE", 0), ("tag", "CONTAINS", "p")]})
    assert len(both) == 20
    assert CALLS["score"] == CALLS["tag"] == 20
    assert set(built.values()) == {1} and len(built) == 20, "one object per row, for both its dynamics"


class BatchChain(DataObject):
    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("parent", None, "children", mandatory=False)]
    __dynamics = [Dynamic("level", int, 60), Dynamic("nick", str, 60)]

    def _level(self) -> int:
        return 1

    def _nick(self) -> str:
        return self.name


def test_a_document_a_path_reaches_newer_than_its_row_is_read_at_its_own_revision(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row of the parent was scanned at one revision; the path from its child loads it after a save:
    the child's condition must test the parent's dynamic of the revision it tests its fields on."""
    parent = BatchChain(data={"name": "old"})
    parent.save()
    BatchChain(data={"name": "child", "parent": parent}).save()
    real = context.load_documents

    def racing(hybrid: str, guids: list[str]) -> Any:
        if hybrid == BatchChain._meta.name and parent.guid in guids:  # another writer, between scan and hop
            other = BatchChain(parent.guid)
            other.name = "new"
            other.save()
        return real(hybrid, guids)

    monkeypatch.setattr(context, "load_documents", racing)
    found = DataList(BatchChain, {"type": "AND", "items": [
        ("level", "GE", 0), ("parent.name", "EQUALS", "new"), ("parent.nick", "EQUALS", "new")]})
    assert [chain.name for chain in found] == ["child"]


@pytest.mark.parametrize("reverse", [False, True])
def test_sort_by_a_dynamic_reads_its_values_in_one_multi_get_per_batch(context: Context,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       reverse: bool) -> None:
    made = probes(30)
    listed = DataList(BatchProbe, {"type": "AND", "items": [("level", "GE", 0)]})
    listed.sort(key=["tag", "score"])  # cold: every value computed once, and cached
    assert CALLS["tag"] == CALLS["score"] == 30
    calls = round_trips(context, monkeypatch)
    listed.sort(key=["status", "score"], reverse=reverse)
    warm = dict(calls)
    # one multi-get of the objects' cached documents, one of the cached scores: none per object
    assert "volatile.get" not in warm and warm["volatile.get_many"] == 2, warm
    assert CALLS["score"] == 30, "served from the cache, not computed again"
    # the order a sort by the same values, read one object at a time, gives (stable for equal keys)
    expected = sorted(made, key=lambda probe: (probe.status != "DOWN", probe.level * 10), reverse=reverse)
    assert [probe.name for probe in listed] == [probe.name for probe in expected]


class SortRack(DataObject):
    __properties: list[Property[Any]] = [Property("name", str)]


class SortBox(DataObject):
    __properties: list[Property[Any]] = [Property("name", str), Property("size", int, default=0)]
    __relations = [Relation("rack", SortRack, "boxes", mandatory=False)]
    __dynamics = [Dynamic("rank", int, 60)]

    def _rank(self) -> int:
        return self.size


class SortBigBox(SortBox):
    """Redeclares the dynamic: another type, never cached."""

    __dynamics = [Dynamic("rank", str, 0)]

    def _rank(self) -> str:  # type: ignore[override]
        return f"big{self.size}"


def test_sort_reads_each_members_dynamic_through_its_own_hybrids_spec(context: Context) -> None:
    rack = SortRack(data={"name": "r"})
    rack.save()
    for number, cls in enumerate([SortBox, SortBigBox, SortBox, SortBigBox]):
        cls(data={"name": f"b{number}", "size": number + 1, "rack": rack}).save()
    boxes = rack.boxes
    boxes.sort(key="rank")  # numbers rank before text, each hybrid's values read with its own spec
    assert [box.name for box in boxes] == ["b0", "b2", "b1", "b3"]
    keys = context.keys
    assert all(context.dynamics.get(keys.cached_dynamic(type(box)._meta.name, box.guid, "rank")) is None
               for box in boxes if isinstance(box, SortBigBox)), "a timeout=0 dynamic is never cached"
