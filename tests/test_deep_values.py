"""Values nested deep: refused past MAX_DEPTH when assigned, and every value at the limit goes through
save, load, a query, dump, load of the dump, check and copy at Python's default recursion limit; a stored
document nested deeper than that (another client's) is a typed error for every reader, never a
RecursionError; a copy refused as too large says which object and that sending it again cannot work."""

from __future__ import annotations

import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from identity_hybrids import Bag
from test_transfer import clear, run_dal

import dal
from dal import DataList, DataObject, Property
from dal.backends.base import Put, TooLargeError
from dal.config import Context
from dal.exceptions import BackendError, DalError, InvalidQueryError, InvalidValueError
from dal.testing.servers import RunningServer
from dal.tools.check.integrity import check
from dal.tools.check.problems import Kind
from dal.tools.transfer.dump import dump, parse_dump, read_dump
from dal.tools.transfer.load import copy, load
from dal.validators import MAX_DEPTH

CLI = ("--hybrids", "identity_hybrids")
#: what a refusal of a value nested too deep says, with its advice
REFUSED = rf"nests lists and dicts more than {MAX_DEPTH} deep; flatten it \(at most {MAX_DEPTH} nested"


class DeepTree(DataObject, hybrid_name="deeptree"):
    """A typed (pydantic-validated) container: its values take the non-native path."""

    __properties: list[Property[Any]] = [Property("name", str), Property("tree", list[Any], mandatory=False)]


def nested(depth: int, kind: type = list) -> Any:
    """Return ``depth`` lists (or dicts) nested in one another, a leaf at the bottom."""
    value: Any = [1] if kind is list else {"leaf": 1}
    for level in range(depth - 1):
        value = [value, level] if kind is list else {"k": value, "n": level}
    return value


def sqlite(tmp_path: Path, name: str, namespace: str = "deep") -> Context:
    return dal.configure(f"sqlite:///{tmp_path / name}", "memory://", namespace=namespace)


# --- the limit, at assignment and at save --------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
@pytest.mark.parametrize(("cls", "field", "kind"), [(Bag, "tags", list), (Bag, "meta", dict),
                                                    (DeepTree, "tree", list)])
def test_a_value_nested_past_the_limit_is_refused_when_assigned(tmp_path: Path, depth: int, cls: type,
                                                                 field: str, kind: type) -> None:
    sqlite(tmp_path, "s.sqlite3")
    assert sys.getrecursionlimit() == 1000
    obj = cls(data={"label" if cls is Bag else "name": "x"})
    with pytest.raises(InvalidValueError, match=f"{cls.__name__}.{field} cannot hold this {kind.__name__}: "
                                                 f".*{REFUSED}"):
        setattr(obj, field, nested(depth, kind))
    with pytest.raises(InvalidValueError, match=REFUSED):
        cls(data={"label" if cls is Bag else "name": "x", field: nested(depth, kind)})


def test_a_value_nested_past_the_limit_by_a_change_in_place_is_refused_at_save(tmp_path: Path) -> None:
    sqlite(tmp_path, "s.sqlite3")
    bag = Bag(data={"label": "x", "loose": []})
    bag.save()
    bag.loose.append(nested(MAX_DEPTH))  # now one level deeper than allowed
    with pytest.raises(InvalidValueError, match=f"loose nests lists and dicts more than {MAX_DEPTH} deep"):
        bag.save()
    assert Bag(bag.guid).loose == []


def test_a_list_holding_itself_is_refused_when_assigned(tmp_path: Path) -> None:
    sqlite(tmp_path, "s.sqlite3")
    endless: list[Any] = []
    endless.append(endless)  # nests without end
    with pytest.raises(InvalidValueError, match=f"Bag.loose cannot hold this list: .*{REFUSED}"):
        Bag(data={"label": "x"}).loose = endless


def test_a_list_put_in_itself_in_place_is_refused_at_save_of_a_stored_object(tmp_path: Path) -> None:
    sqlite(tmp_path, "s.sqlite3")
    bag, other = Bag(data={"label": "x", "loose": []}), Bag(data={"label": "y", "loose": []})
    dal.save_many([bag, other])
    for obj in (bag, other):
        obj.loose.append(obj.loose)  # compared with the stored value before it is validated again
    with pytest.raises(InvalidValueError, match=f"loose nests lists and dicts more than {MAX_DEPTH} deep"):
        bag.save()
    with pytest.raises(InvalidValueError, match=f"loose nests lists and dicts more than {MAX_DEPTH} deep"):
        dal.save_many([other])
    assert Bag(bag.guid).loose == [] and Bag(other.guid).loose == []


# --- every value at the limit goes everywhere ------------------------------------------------------------


def save_deepest() -> dict[str, Any]:
    """Save a Bag and a DeepTree holding values nested exactly MAX_DEPTH deep; return their fields."""
    values = {"tags": nested(MAX_DEPTH), "meta": nested(MAX_DEPTH, dict),
              "loose": [nested(MAX_DEPTH - 1, dict), {"a": nested(MAX_DEPTH - 2)}]}
    Bag(data={"label": "deep", **values}).save()
    DeepTree(data={"name": "deep", "tree": nested(MAX_DEPTH)}).save()
    return values


def test_every_value_at_the_limit_is_saved_read_queried_dumped_loaded_checked_and_copied(
        tmp_path: Path) -> None:
    assert sys.getrecursionlimit() == 1000
    source = sqlite(tmp_path, "s.sqlite3")
    values = save_deepest()
    sqlite(tmp_path, "s.sqlite3")  # nothing cached: every read decodes the stored document
    [bag] = DataList(Bag, query={"type": "AND", "items": [("tags", "EQUALS", values["tags"]),
                                                          ("meta", "EQUALS", values["meta"])]})
    assert {name: getattr(Bag(bag.guid), name) for name in values} == values
    assert [tree.tree for tree in DataList(DeepTree)] == [nested(MAX_DEPTH)]
    assert check(source).clean
    text = io.StringIO()
    dump(source, text)
    loaded = sqlite(tmp_path, "l.sqlite3")
    assert load(loaded, read_dump(io.StringIO(text.getvalue()))).total == 2
    copied = sqlite(tmp_path, "c.sqlite3")
    assert copy(source, copied).mismatches == {}
    for context in (loaded, copied):
        assert check(context).clean
        again = io.StringIO()
        dump(context, again)
        assert json.loads(again.getvalue())["hybrids"] == json.loads(text.getvalue())["hybrids"]


def test_the_cli_dumps_loads_checks_and_copies_values_at_the_limit(tmp_path: Path) -> None:
    sqlite(tmp_path, "s.sqlite3")
    Bag(data={"label": "deep", "tags": nested(MAX_DEPTH), "meta": nested(MAX_DEPTH, dict)}).save()
    source, loaded, copied = (f"sqlite:///{tmp_path / name}" for name in ("s.sqlite3", "l.sqlite3",
                                                                          "c.sqlite3"))
    steps = [("dump", "--persistent", source, "-o", "out.json"), ("load", "out.json", "--persistent", loaded),
             ("copy", source, copied), *(("check", "--persistent", url) for url in (source, loaded, copied))]
    for step in steps:
        result = run_dal(*step, "--namespace", "deep", *CLI, cwd=tmp_path)
        assert result.returncode == 0, (step, result.stdout[-500:], result.stderr[-1000:])


# --- a document nested too deeply to decode ---------------------------------------------------------------

DEEP_GUID = str(uuid.UUID(int=1))
#: a document another client (or a process with a raised recursion limit) stored: 1500 lists deep
TOO_DEEP = b'{"label": "deep", "tags": ' + b"[" * 1500 + b"]" * 1500 + b"}"
UNREADABLE = "is not a JSON object \\(it nests lists and objects too deeply to decode"


def store_too_deep(tmp_path: Path) -> tuple[Context, str]:
    context = sqlite(tmp_path, "s.sqlite3")
    Bag(data={"label": "fine"}).save()
    key = context.keys.doc("vbag", DEEP_GUID)
    assert context.persistent.commit([], [Put(key, TOO_DEEP)]).ok
    return context, key


def test_a_document_nested_too_deeply_to_decode_is_a_typed_error_for_every_reader(tmp_path: Path) -> None:
    context, key = store_too_deep(tmp_path)
    with pytest.raises(BackendError, match=f"Bag {DEEP_GUID} {UNREADABLE}"):
        Bag(DEEP_GUID)
    with pytest.raises(BackendError, match=f"Bag {DEEP_GUID} {UNREADABLE}"):
        list(DataList(Bag))
    [problem] = check(context).problems
    assert problem.kind is Kind.INVALID_DOCUMENT and problem.key == key
    assert "too deeply to decode" in problem.message
    with pytest.raises(BackendError, match=f"{key} {UNREADABLE}"):
        dump(context, io.StringIO())
    with pytest.raises(BackendError, match=f"{key} {UNREADABLE}"):
        copy(context, sqlite(tmp_path, "c.sqlite3"))


def test_the_cli_names_a_document_nested_too_deeply_to_decode(tmp_path: Path) -> None:
    _, key = store_too_deep(tmp_path)
    source = f"sqlite:///{tmp_path / 's.sqlite3'}"
    checked = run_dal("check", "--persistent", source, "--namespace", "deep", *CLI, cwd=tmp_path)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr[-1000:]
    assert "invalid_document" in checked.stdout and "too deeply to decode" in checked.stdout
    for step in (("dump", "--persistent", source, "-o", "out.json"),
                 ("copy", source, f"sqlite:///{tmp_path / 'c.sqlite3'}")):
        result = run_dal(*step, "--namespace", "deep", *CLI, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1000:]
        assert result.stderr.startswith(f"error: the stored document {key} is not a JSON object (it nests")
    assert not (tmp_path / "out.json").exists()


# --- an object too large for one etcd request -------------------------------------------------------------


@pytest.mark.etcd
def test_a_copy_refused_as_too_large_names_the_object_and_what_to_change(
        tmp_path: Path, etcd_server: RunningServer, namespace: str) -> None:
    guids = [str(uuid.UUID(int=n)) for n in (1, 2, 3, 9)]
    big = {"label": "x" * (2 << 20)}  # 2 MiB: past etcd's default --max-request-bytes (1.5 MiB)
    records = [{"guid": guid, "data": {"label": f"small{n}"}} for n, guid in enumerate(guids[:3])]
    document = {"format": "dal-dump", "version": 1, "namespace": "x",
                "hybrids": {"vbag": [*records, {"guid": guids[3], "data": big}]}}
    source = sqlite(tmp_path, "s.sqlite3", namespace)
    load(source, parse_dump(document))
    destination = dal.configure(etcd_server.url, "memory://", namespace=namespace)
    try:
        with pytest.raises(TooLargeError) as caught:
            copy(source, destination, batch_size=1)
        message = str(caught.value)
        assert "--max-request-bytes" in message and ".." not in message and "retrying is safe" not in message
        assert (f"Batch 4 of 4 was not written: Bag {guids[3]} alone writes 2,09" in message
                and "batches 1-3 (3 objects) were written and are kept" in message)
        assert message.endswith(f"Raise that limit or make Bag {guids[3]} smaller, then copy again with "
                                "--replace (replace=True) to finish")
        assert len(destination.persistent.scan(destination.keys.doc("vbag", ""))) == 3
    finally:
        clear(destination)


@pytest.mark.etcd
def test_a_copy_refused_at_its_first_batch_runs_again_as_it_was(
        tmp_path: Path, etcd_server: RunningServer, namespace: str) -> None:
    """The first batch's refusal leaves the schema record written before it, and no object: "copy again"
    (the message's advice) copies, rather than refusing the namespace as not empty."""
    guid = str(uuid.UUID(int=1))
    document = {"format": "dal-dump", "version": 1, "namespace": "x",
                "hybrids": {"vbag": [{"guid": guid, "data": {"label": "x" * (2 << 20)}}]}}
    source = sqlite(tmp_path, "s.sqlite3", namespace)
    load(source, parse_dump(document))
    destination = dal.configure(etcd_server.url, "memory://", namespace=namespace)
    try:
        with pytest.raises(TooLargeError) as caught:
            copy(source, destination)
        assert "Batch 1 of 1 was not written: " in str(caught.value)
        message = str(caught.value)
        assert "no object was written" in message and message.endswith("then copy again to finish")
        left = [key for key, _ in destination.persistent.scan(destination.keys.root)
                if not key.startswith(destination.keys.journal())]
        assert left == [destination.keys.schema("vbag")]  # what the fix must not count as data
        with pytest.raises(TooLargeError, match="Batch 1 of 1 was not written"):  # not "is not empty"
            copy(source, destination)
        small = {"format": "dal-dump", "version": 1, "namespace": "x",
                 "hybrids": {"vbag": [{"guid": guid, "data": {"label": "small now"}}]}}
        load(source, parse_dump(small), replace=True)
        copied = copy(source, destination)
        assert copied.destination["vbag"] == 1 and not copied.mismatches and Bag(guid).label == "small now"
        with pytest.raises(DalError, match="is not empty"):  # once it holds an object, it is refused
            copy(source, destination)
    finally:
        clear(destination)


def test_a_cached_dynamic_nested_too_deeply_to_decode_reads_as_a_miss() -> None:
    from dal.objects.dynamics_tags import loads_typed

    deep = b"[" * 1500 + b"]" * 1500  # another client's entry: dal caches no value nested past MAX_DEPTH
    assert loads_typed(deep) is None and loads_typed(b"[" + deep + b',1,"d"]') is None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 700, 1500, 5000])
def test_a_query_value_nested_deeper_than_any_stored_one_is_a_typed_error(tmp_path: Path, depth: int) -> None:
    sqlite(tmp_path, "q.sqlite3")
    values = save_deepest()
    # a stored value at the limit is found by EQUALS and by IN (its list one level more)
    for operator, value in (("EQUALS", values["tags"]), ("IN", [values["tags"]])):
        assert DataList(Bag, query={"type": "AND", "items": [("tags", operator, value)]}).count() == 1
    refused = f"more than {MAX_DEPTH} deep; no stored|recursion depth.*no stored"
    for operator in ("EQUALS", "CONTAINS"):
        with pytest.raises(InvalidQueryError, match=refused):
            DataList(Bag, query={"type": "AND", "items": [("tags", operator, nested(depth))]}).count()
    with pytest.raises(InvalidQueryError, match=refused):
        Bag.where(Bag.tags == nested(depth)).count()  # type: ignore[attr-defined]
