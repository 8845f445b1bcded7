"""DataList queries: validation, semantics, the planner, cached results, and list behaviour."""

from __future__ import annotations

import copy
import os
import uuid
from typing import Any

import pytest
from conftest import PairURLs, round_trips
from harness import run_spawned
from query_hybrids import Item, Kind, Site

from dal import DataList
from dal.config import Context
from dal.exceptions import InvalidQueryError, ObjectNotFoundError

AND, OR = DataList.where_operator.AND, DataList.where_operator.OR
OP = DataList.operator


def where(*items: Any, kind: Any = AND) -> dict[str, Any]:
    return {"type": kind, "items": list(items)}


def names(result: DataList[Any]) -> list[str]:
    return sorted(obj.name for obj in result)


@pytest.fixture
def catalog(context: Context) -> dict[str, Any]:
    """Two sites, three kinds, six items."""
    north, south = Site(data={"name": "north", "region": "eu"}), Site(data={"name": "south", "region": "us"})
    for site in (north, south):
        site.save()
    alba = Kind(data={"code": "alba", "label": "ALBA", "site": north})
    ceph = Kind(data={"code": "ceph", "label": "Ceph", "site": south})
    bare = Kind(data={"code": "bare", "label": None})
    for kind in (alba, ceph, bare):
        kind.save()
    rows = [
        ("disk1", "RUNNING", 10, ["gold", "ssd"], alba, "prod-eu"),
        ("disk2", "RUNNING", 20, ["silver"], ceph, "Prod-us"),
        ("disk10", "STOPPED", 30, [], alba, None),
        ("vol1", "NEW", 40, ["gold"], None, "test"),
        ("vol2", "RUNNING", 50, ["GOLD"], bare, "production"),
        ("vol3", "STOPPED", 5, [], ceph, "staging"),
    ]
    items = {}
    for name, status, size, tags, kind, note in rows:
        item = Item(data={"name": name, "status": status, "size": size, "tags": tags, "kind": kind,
                          "note": note, "serial": f"sn-{name}"})
        item.save()
        items[name] = item
    return {"items": items, "kinds": {"alba": alba, "ceph": ceph, "bare": bare}, "sites": [north, south]}


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "message"), [
    ("status", "a query is"),
    ({"type": "AND"}, "has keys"),
    ({"type": "XOR", "items": []}, "where_operator.AND"),
    ({"type": "AND", "items": "status"}, "must be a list"),
    (where(("status", OP.EQUALS)), "a condition is"),
    (where(("colour", OP.EQUALS, "red")), "Item has no field 'colour'"),
    (where(("status", "LIKE", "x")), "unknown operator 'LIKE'"),
    (where(("status", OP.EQUALS, "BROKEN")), "must be one of 'NEW', 'RUNNING', 'STOPPED'"),
    (where(("size", OP.EQUALS, "ten")), "Item.size"),
    (where(("size", OP.IN, 10)), "IN needs a list"),
    (where(("size", OP.CONTAINS, 1)), "CONTAINS works on those only"),
    (where(("name", OP.CONTAINS, 1)), "takes a substring"),
    (where(("size", OP.LT, None)), "use EQUALS None"),
    (where(("name", OP.EQUALS, "x", "no")), "case_sensitive must be True or False"),
    (where(("name.code", OP.EQUALS, "x")), "Item.name in 'name.code' is not a relation"),
    (where(("kind.colour", OP.EQUALS, "x")), "Kind has no field 'colour'"),
    (where(("kind_guid", OP.EQUALS, 5)), "holds guids"),
    (where(where(("nope", OP.EQUALS, 1)), kind=OR), "query['items'][0]['items'][0]"),
])
def test_invalid_queries_say_what_was_expected(query: Any, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        DataList(Item, query)


def test_a_reverse_relation_is_named_as_such() -> None:
    with pytest.raises(InvalidQueryError, match="items is a reverse relation, query Item instead"):
        DataList(Kind, where(("items", OP.EQUALS, None)))


def test_a_query_is_validated_before_it_runs_and_never_modified(catalog: dict[str, Any]) -> None:
    query = where(("status", "EQUALS", "RUNNING"),
                  where(("tags", OP.CONTAINS, "gold"), ("name", OP.IN, ("disk2", "vol9")), kind=OR))
    before = copy.deepcopy(query)
    result = DataList(Item, query)
    assert names(result) == ["disk1", "disk2"]
    assert query == before
    assert isinstance(query["items"][1]["items"][1][2], tuple)


# --- semantics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    (where(("status", OP.EQUALS, "RUNNING")), ["disk1", "disk2", "vol2"]),
    (where(("status", OP.NOT_EQUALS, "RUNNING")), ["disk10", "vol1", "vol3"]),
    (where(("size", OP.LT, 20)), ["disk1", "vol3"]),
    (where(("size", OP.LE, 20)), ["disk1", "disk2", "vol3"]),
    (where(("size", OP.GT, 39.5)), ["vol1", "vol2"]),
    (where(("size", OP.GE, 40)), ["vol1", "vol2"]),
    (where(("status", OP.IN, ["NEW", "STOPPED"])), ["disk10", "vol1", "vol3"]),
    (where(("name", OP.CONTAINS, "disk")), ["disk1", "disk10", "disk2"]),
    (where(("tags", OP.CONTAINS, "gold")), ["disk1", "vol1"]),
    (where(("tags", OP.CONTAINS, "gold", False)), ["disk1", "vol1", "vol2"]),
    (where(("note", OP.CONTAINS, "prod")), ["disk1", "vol2"]),
    (where(("note", OP.CONTAINS, "prod", False)), ["disk1", "disk2", "vol2"]),
    (where(("note", OP.EQUALS, "PROD-EU", False)), ["disk1"]),
    (where(("note", OP.EQUALS, None)), ["disk10"]),
    (where(("note", OP.NOT_EQUALS, None)), ["disk1", "disk2", "vol1", "vol2", "vol3"]),
    (where(("kind_guid", OP.EQUALS, None)), ["vol1"]),
    (where(("kind.code", OP.EQUALS, "alba")), ["disk1", "disk10"]),
    (where(("kind.code", OP.IN, ["alba", "ceph"])), ["disk1", "disk10", "disk2", "vol3"]),
    (where(("kind.label", OP.EQUALS, None)), ["vol2"]),  # vol1 has no kind: matches nothing
    (where(("kind.label", OP.NOT_EQUALS, "ALBA")), ["disk2", "vol2", "vol3"]),
    (where(("kind.site.region", OP.EQUALS, "eu")), ["disk1", "disk10"]),
    (where(("kind.site.name", OP.CONTAINS, "o")), ["disk1", "disk10", "disk2", "vol3"]),
    (where(("double", OP.GE, 60)), ["disk10", "vol1", "vol2"]),
    (where(("serial", OP.EQUALS, "sn-vol2")), ["vol2"]),
    (where(), ["disk1", "disk10", "disk2", "vol1", "vol2", "vol3"]),
    (where(kind=OR), []),
    (where(("status", OP.EQUALS, "RUNNING"),
           where(("size", OP.LT, 15), ("kind.code", OP.EQUALS, "bare"), kind=OR)), ["disk1", "vol2"]),
])
def test_operators_and_fields(catalog: dict[str, Any], query: dict[str, Any], expected: list[str]) -> None:
    assert names(DataList(Item, query)) == expected
    assert names(DataList(Item, query)) == expected  # and again, from the cached result where cached


def test_guid_and_relation_objects_as_values(catalog: dict[str, Any]) -> None:
    items, kinds = catalog["items"], catalog["kinds"]
    absent = str(uuid.uuid4())
    by_guid = DataList(Item, where(("guid", OP.IN, [items["vol1"].guid, items["vol2"].guid, absent])))
    assert names(by_guid) == ["vol1", "vol2"]
    assert names(DataList(Item, where(("kind", OP.EQUALS, kinds["ceph"])))) == ["disk2", "vol3"]
    assert names(DataList(Item, where(("kind.guid", OP.EQUALS, kinds["ceph"].guid)))) == ["disk2", "vol3"]
    assert names(DataList(Item, where(("kind", OP.EQUALS, None)))) == ["vol1"]


def test_a_self_relation_in_a_path(catalog: dict[str, Any]) -> None:
    parent = catalog["items"]["disk1"]
    child = Item(data={"name": "clone", "parent": parent})
    child.save()
    assert names(DataList(Item, where(("parent.name", OP.EQUALS, "disk1")))) == ["clone"]
    assert names(DataList(Item, where(("parent.parent.name", OP.EQUALS, "disk1")))) == []


# --- the planner ---------------------------------------------------------------------------------


def plan_of(query: dict[str, Any]) -> str:
    return str(DataList(Item, query).explain())


def test_explain_shows_which_items_used_which_index(catalog: dict[str, Any]) -> None:
    plan = plan_of(where(("status", OP.EQUALS, "RUNNING"), ("name", OP.CONTAINS, "disk")))
    assert "index lookup on Item: status EQUALS 'RUNNING' -> 3" in plan
    assert "verified against their documents: 3 candidates -> 2" in plan
    assert "scanned" not in plan
    unique = plan_of(where(("serial", OP.EQUALS, "sn-vol1")))
    assert "unique lookup on Item: serial EQUALS 'sn-vol1' -> 1" in unique
    kind = catalog["kinds"]["ceph"]
    assert "link lookup on Item: kind_guid EQUALS" in plan_of(where(("kind_guid", OP.EQUALS, kind.guid)))
    assert "guid lookup on Item" in plan_of(where(("guid", OP.EQUALS, kind.guid)))
    walked = plan_of(where(("kind.site.region", OP.EQUALS, "eu")))
    assert "index lookup on Site: region EQUALS 'eu' -> 1" in walked
    assert "walked back through link keys: kind.site.region EQUALS 'eu' -> 2" in walked
    # no index: a scan, in batches
    assert "scanned 6 documents" in plan_of(where(("size", OP.GT, 1)))
    assert "scanned 6 documents" in plan_of(where(("status", OP.EQUALS, "RUNNING"), ("size", OP.GT, 1),
                                                  kind=OR))
    assert "scanned 6 documents" in plan_of(where(("note", OP.EQUALS, "test", False)))
    # OR of indexable items: a union of lookups
    union = plan_of(where(("status", OP.EQUALS, "NEW"), ("serial", OP.EQUALS, "sn-disk1"), kind=OR))
    assert "index lookup" in union and "unique lookup" in union and "scanned" not in union


def test_explain_reports_a_cache_hit(catalog: dict[str, Any]) -> None:
    query = where(("status", OP.EQUALS, "RUNNING"))
    assert "result cache: miss" in plan_of(query)
    second = plan_of(query)
    assert "result cache: hit" in second
    assert "index entries of Item.status" in second  # the plan it would run
    assert "result cache: off" in plan_of(where(("double", OP.GT, 1)))
    path = where(("kind.site.region", OP.EQUALS, "eu"))
    plan_of(path)
    # a hit shows the plan it would run, which for a dotted path depends on how wide it turns out
    hit = plan_of(path)
    assert "walk back kind.site through link keys (or, past 2,000 objects on a hop, scan instead)" in hit


def test_candidates_are_reverified_against_the_data(context: Context, catalog: dict[str, Any]) -> None:
    # an index entry without a matching document (e.g. damage `dal check` would report) is not returned
    from dal.backends.base import Put

    stale = context.keys.index(Item._meta.name, "status", "RUNNING", catalog["items"]["vol1"].guid)
    assert context.commit([], [Put(stale, b"")]).ok
    assert names(DataList(Item, where(("status", OP.EQUALS, "RUNNING"), ("size", OP.GE, 0)))) == [
        "disk1", "disk2", "vol2"]


def test_dotted_path_round_trips_are_constant_per_hop(context: Context,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sites = [Site(data={"name": f"site{n}", "region": "eu" if n == 0 else "us"}) for n in range(3)]
    for site in sites:
        site.save()
    kinds = [Kind(data={"code": f"k{n}", "label": f"K{n}", "site": sites[n % 3]}) for n in range(10)]
    for kind in kinds:
        kind.save()
    for n in range(1000):
        Item(data={"name": f"i{n}", "kind": kinds[n % 10]}).save()
    costs = {}
    for label, query, expected in (
            ("backward", where(("kind.code", OP.EQUALS, "k3")), 100),
            ("two hops backward", where(("kind.site.region", OP.EQUALS, "eu")), 400),
            ("forward", where(("kind.label", OP.EQUALS, "K3")), 100),
            ("two hops forward", where(("kind.site.name", OP.EQUALS, "site0")), 400)):
        calls = round_trips(context, monkeypatch)
        result = DataList(Item, query)
        assert len(result) == expected, label
        costs[label] = sum(calls.values())
        monkeypatch.undo()
    # backward: lookup + one link scan per hop + the candidates' documents (cache, durable)
    # + the hop documents for verification (cache, durable), plus the result cache's own calls
    assert costs["backward"] <= 12, costs
    assert costs["two hops backward"] <= 16, costs
    # forward: two scanned batches of 500, each with one batched load per hop (cache, durable)
    assert costs["forward"] <= 12, costs
    assert costs["two hops forward"] <= 16, costs


# --- cached results ------------------------------------------------------------------------------


def test_results_are_invalidated_exactly(context: Context, catalog: dict[str, Any]) -> None:
    running = where(("status", OP.EQUALS, "RUNNING"))
    labelled = where(("note", OP.EQUALS, "test"))

    def state(query: dict[str, Any]) -> str:
        result = DataList(Item, query)
        plan = result.explain()
        return plan.cache

    assert state(running) == "miss" and state(running) == "hit"
    assert state(labelled) == "miss" and state(labelled) == "hit"
    # creating a NEW item cannot change `status EQUALS RUNNING`: kept
    Item(data={"name": "fresh", "status": "NEW"}).save()
    assert state(running) == "hit"
    assert state(labelled) == "hit"  # its note is None, not "test"
    Item(data={"name": "fresh2", "note": "test"}).save()
    assert state(labelled) == "miss"
    # changing a field the query does not read keeps it; `note2` is not `note`
    vol1 = Item(catalog["items"]["vol1"].guid)
    vol1.note2 = "test"
    vol1.save()
    assert state(running) == "hit" and state(labelled) == "hit"
    # a change to or from the value drops it, and the new result is right
    vol1.status = "RUNNING"
    vol1.save()
    assert state(running) == "miss"
    assert names(DataList(Item, running)) == ["disk1", "disk2", "vol1", "vol2"]
    assert names(DataList(Item, labelled)) == ["fresh2", "vol1"]
    catalog["items"]["disk1"].delete()
    assert names(DataList(Item, running)) == ["disk2", "vol1", "vol2"]


def test_reverse_lists_follow_every_write(catalog: dict[str, Any]) -> None:
    alba = Kind(catalog["kinds"]["alba"].guid)
    assert names(alba.items) == ["disk1", "disk10"]
    assert names(alba.items) == ["disk1", "disk10"]
    vol3 = catalog["items"]["vol3"]
    vol3.kind = alba
    vol3.save()
    assert names(alba.items) == ["disk1", "disk10", "vol3"]
    assert alba.items_guids == sorted(alba.items_guids)
    catalog["items"]["disk10"].delete()
    assert names(alba.items) == ["disk1", "vol3"]
    alba.delete(abandon=["items"])
    assert names(DataList(Item, where(("kind_guid", OP.EQUALS, None)))) == ["disk1", "vol1", "vol3"]


def test_the_read_path_writes_nothing_durable(context: Context, catalog: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = round_trips(context, monkeypatch)
    for query in (where(("status", OP.EQUALS, "RUNNING")), where(("size", OP.GT, 3)),
                  where(("kind.site.region", OP.EQUALS, "eu")), where(("double", OP.EQUALS, 20))):
        list(DataList(Item, query))
        list(DataList(Item, query))
    assert calls["persistent.commit"] == 0


# --- list behaviour ------------------------------------------------------------------------------


def test_a_list_runs_lazily_and_once(context: Context, catalog: dict[str, Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = round_trips(context, monkeypatch)
    result = DataList(Item, where(("size", OP.GT, 5)))
    assert sum(calls.values()) == 0
    assert repr(result) == "<DataList of Item: not run yet>"
    assert len(result) == 5
    used = sum(calls.values())
    assert len(result) == 5 and bool(result)
    assert sum(calls.values()) == used


def test_list_behaviour(catalog: dict[str, Any]) -> None:
    items = catalog["items"]
    result = DataList(Item, where(("name", OP.CONTAINS, "disk")))
    assert [obj.name for obj in result] == ["disk1", "disk2", "disk10"] or len(result) == 3
    result.sort()
    assert [obj.name for obj in result] == ["disk1", "disk2", "disk10"]  # natural order
    assert result[0].name == "disk1" and result[-1].name == "disk10"
    sliced = result[1:]
    assert isinstance(sliced, DataList) and [obj.name for obj in sliced] == ["disk2", "disk10"]
    assert result.index(items["disk2"]) == 1 and items["disk2"] in result and items["vol1"] not in result
    with pytest.raises(ValueError, match="not in this DataList"):
        result.index(items["vol1"])
    result.reverse()
    assert [obj.name for obj in result] == ["disk10", "disk2", "disk1"]
    combined = result + DataList(Item, where(("name", OP.EQUALS, "vol1")))
    assert [obj.name for obj in combined] == ["disk10", "disk2", "disk1", "vol1"]
    with pytest.raises(TypeError, match="only add a DataList of Item"):
        result + DataList(Kind)  # type: ignore[operator]
    popped = combined.pop()
    assert popped.name == "vol1" and len(combined) == 3
    combined.remove(items["disk2"])
    assert combined.guids == [items["disk10"].guid, items["disk1"].guid]
    with pytest.raises(ValueError, match="not in this DataList"):
        combined.remove(items["vol2"])
    guids = combined.guids
    guids.append("x")
    assert len(combined) == 2  # `guids` is a copy


def test_sorting(catalog: dict[str, Any]) -> None:
    result = DataList(Item)
    result.sort(key=["status", "name"])
    assert [(obj.status, obj.name) for obj in result] == [
        ("NEW", "vol1"), ("RUNNING", "disk1"), ("RUNNING", "disk2"), ("RUNNING", "vol2"),
        ("STOPPED", "disk10"), ("STOPPED", "vol3")]
    result.sort(key="size", reverse=True)
    assert [obj.size for obj in result] == [50, 40, 30, 20, 10, 5]
    result.sort(key=lambda obj: (obj.kind.code if obj.kind else None, obj.name))
    assert [obj.name for obj in result] == ["vol1", "disk1", "disk10", "vol2", "disk2", "vol3"]
    result.sort(key="kind.site.name")
    assert [obj.name for obj in result][:2] == ["vol1", "vol2"]  # unset sorts first
    with pytest.raises(InvalidQueryError, match="no field 'colour'"):
        result.sort(key="colour")


def test_iteration_skips_objects_deleted_meanwhile(catalog: dict[str, Any]) -> None:
    result = DataList(Item, where(("status", OP.EQUALS, "RUNNING")))
    assert len(result) == 3
    Item(catalog["items"]["disk2"].guid).delete()
    assert [obj.name for obj in result] == ["disk1", "vol2"] or sorted(obj.name for obj in result) == [
        "disk1", "vol2"]
    with pytest.raises(ObjectNotFoundError, match="deleted since the list was made"):
        result[result.guids.index(catalog["items"]["disk2"].guid)]


def test_a_given_guid_that_names_nothing_is_counted_and_skipped(catalog: dict[str, Any]) -> None:
    """``guids=`` are taken unchecked (docs/queries.md): one of another hybrid, and one never stored,
    count, are skipped by iteration and first(), and ``[i]`` says what may be wrong, not that a query
    ran and something was deleted."""
    kind, never = catalog["kinds"]["ceph"].guid, str(uuid.uuid4())
    given = DataList(Item, guids=[kind, never])
    assert (len(given), given.count(), given.exists()) == (2, 2, True)
    assert list(given) == [] and given.first() is None
    for index, guid in enumerate((kind, never)):
        with pytest.raises(ObjectNotFoundError) as caught:
            given[index]
        assert f"no Item {guid} of this list is stored" in str(caught.value)
        assert "guids= are taken unchecked" in str(caught.value)


def test_iteration_after_len_uses_the_querys_documents_only_while_nothing_was_committed(
        catalog: dict[str, Any], context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """``list()`` calls len() (which runs the query) and then iterates: on a store with a cheap data
    stamp, the iteration takes the documents the query read, not a second read of the same ones;
    on one without (etcd), or after a commit, it reads them again."""
    calls = round_trips(context, monkeypatch)
    stamped = context.data_stamp() is not None
    result = DataList(Item, where(("status", OP.EQUALS, "RUNNING")))
    assert len(result) == 3
    calls.clear()
    assert sorted(obj.name for obj in result) == ["disk1", "disk2", "vol2"]
    assert calls["persistent.get_many"] == (0 if stamped else 1), calls
    assert names(DataList(Item, where(("status", OP.EQUALS, "STOPPED")))) == ["disk10", "vol3"]  # list()

    again = DataList(Item, where(("status", OP.EQUALS, "NEW")))
    assert len(again) == 1
    catalog["items"]["vol3"].size = 6
    catalog["items"]["vol3"].save()  # an unrelated commit: what the query read may be out of date
    calls.clear()
    assert [obj.name for obj in again] == ["vol1"]
    assert calls["persistent.get_many"] == 1, calls


def test_first_builds_its_object_from_the_document_the_query_read(
        catalog: dict[str, Any], context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """``first()`` reads no document the query read already (it read it again before), and after an
    earlier use it takes them on the same terms as an iteration: only while nothing was committed."""
    # the hybrid's first cached query takes its schema version (dal.objects.schema.as_of): once
    assert len(DataList(Item, where(("name", OP.EQUALS, "none"))).guids) == 0
    calls = round_trips(context, monkeypatch)
    alone = DataList(Item, where(("status", OP.EQUALS, "STOPPED")))
    assert len(alone.guids) == 2
    query_only = dict(calls)
    calls.clear()
    found = DataList(Item, where(("status", OP.EQUALS, "RUNNING"))).first()
    assert found is not None and found.status == "RUNNING"
    assert dict(calls) == query_only  # the same query's reads, nothing more

    again = DataList(Item, where(("status", OP.EQUALS, "NEW")))
    assert len(again) == 1
    catalog["items"]["vol1"].size = 7
    catalog["items"]["vol1"].save()  # what the query read is out of date now
    first = again.first()
    assert first is not None and first.size == 7


def test_an_iteration_after_first_still_uses_the_documents_the_query_read(
        catalog: dict[str, Any], context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """``if result.first(): for obj in result: ...`` reads the documents once, where a cheap data
    stamp lets the list keep them (first() leaves them kept)."""
    calls = round_trips(context, monkeypatch)
    stamped = context.data_stamp() is not None
    result = DataList(Item, where(("status", OP.EQUALS, "RUNNING")))
    assert len(result) == 3
    calls.clear()
    assert result.first() is not None
    assert sorted(obj.name for obj in result) == ["disk1", "disk2", "vol2"]
    assert calls["persistent.get_many"] + calls["persistent.get"] == (0 if stamped else 2), calls


def test_objects_from_first_and_from_iteration_share_nothing(catalog: dict[str, Any]) -> None:
    """An object takes its decoded document as its own state: two objects built from one kept
    document would see each other's unsaved changes (and a save of one drop what the other moved
    to its undeclared fields)."""
    result = DataList(Item, where(("status", OP.EQUALS, "RUNNING")))
    assert len(result) == 3  # kept, stamped, where the store has a cheap stamp
    one = result.first()
    assert one is not None
    size = one.size
    one.size = size + 1000
    two = result.first()
    assert two is not None and two.guid == one.guid and two.size == size
    iterated = next(obj for obj in result if obj.guid == one.guid)
    assert iterated.size == size
    assert one._data is not two._data and iterated._data is not one._data


def _save_size_in_child(persistent: str, volatile: str, namespace: str, guid: str, size: int) -> None:
    import dal

    dal.configure(persistent, volatile, namespace=namespace)
    item = Item(guid)
    item.size = size
    item.save()


def test_a_forked_child_never_takes_the_documents_its_parent_read_for_current(
        catalog: dict[str, Any], context: Context, pair_urls: PairURLs) -> None:
    """The child counts its change tokens afresh: its stamps must not equal the parent's, or it
    would take documents the parent read before another process's commit for current."""
    result = DataList(Item, where(("status", OP.EQUALS, "NEW")))
    assert len(result) == 1  # kept, with the parent's stamp
    guid = catalog["items"]["vol1"].guid
    run_spawned(_save_size_in_child, pair_urls.persistent, pair_urls.volatile, pair_urls.namespace, guid, 77)
    for use in ("first", "iterate"):
        pid = os.fork()
        if pid == 0:
            try:
                found = result.first() if use == "first" else next(iter(result))
                os._exit(0 if found is not None and found.size == 77 else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"{use} in the child: stale or failed"


def test_first_skips_an_object_deleted_after_the_query_read_it(catalog: dict[str, Any]) -> None:
    result = DataList(Item, where(("status", OP.EQUALS, "STOPPED")))
    guids = result.guids
    Item(guids[0]).delete()
    first = result.first()
    assert first is not None and first.guid == guids[1]


def _delete_in_child(persistent: str, volatile: str, namespace: str, guid: str) -> None:
    import dal

    dal.configure(persistent, volatile, namespace=namespace)
    Item(guid).delete()


def test_iteration_after_len_skips_an_object_another_process_deleted(
        catalog: dict[str, Any], context: Context, pair_urls: PairURLs) -> None:
    result = DataList(Item, where(("status", OP.EQUALS, "RUNNING")))
    assert len(result) == 3
    run_spawned(_delete_in_child, pair_urls.persistent, pair_urls.volatile, pair_urls.namespace,
                catalog["items"]["disk2"].guid)
    assert sorted(obj.name for obj in result) == ["disk1", "vol2"]


def test_paging(catalog: dict[str, Any]) -> None:
    result = DataList(Item)
    result.sort()
    first = result.page(1, 4)
    assert [obj.name for obj in first.items] == ["disk1", "disk2", "disk10", "vol1"]
    assert (first.total, first.pages, first.has_next, first.has_previous) == (6, 2, True, False)
    last = result.page(2, 4)
    assert [obj.name for obj in last.items] == ["vol2", "vol3"] and not last.has_next and last.has_previous
    assert len(result.page(3, 4).items) == 0
    assert [len(page.items) for page in result.pages(5)] == [5, 1]
    with pytest.raises(InvalidQueryError, match="counts from 1"):
        result.page(0, 4)


def test_a_write_landing_while_a_result_is_computed_is_never_hidden(
        catalog: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from dal.query import planner

    running = where(("status", OP.EQUALS, "RUNNING"))
    real = planner.Planner.guids
    vol1 = catalog["items"]["vol1"]

    def racing(self: planner.Planner) -> list[str]:
        guids = real(self)  # the answer is computed ...
        vol1.status = "RUNNING"  # ... then a write commits before it is cached
        vol1.save()
        return guids

    monkeypatch.setattr(planner.Planner, "guids", racing)
    assert names(DataList(Item, running)) == ["disk1", "disk2", "vol2"]  # true when it was computed
    monkeypatch.undo()
    again = DataList(Item, running)
    assert names(again) == ["disk1", "disk2", "vol1", "vol2"]
    assert again.explain().cache == "miss"
