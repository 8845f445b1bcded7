"""``dal load`` of a corrupt dump (or into a store with stale keys): a typed error (exit 2) before anything is
written, naming the remedy, never a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from test_transfer import CLI, G1, G2, in_namespace, is_empty, numbered_guid, run_dal
from transfer_hybrids import XConsole, XRack, XServer

import dal
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import BackendError, InvalidValueError, OneToOneError, UniqueConstraintError
from dal.tools.check.integrity import check
from dal.tools.transfer.dump import dump, parse_dump, read_dump
from dal.tools.transfer.load import copy, load

#: a number Python refuses to parse (longer than its int digit limit), and nesting deeper than its stack
HUGE = '{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {}, "counts": {"xrack": 1%s}}' % (
    "0" * 5000)
DEEP = "[" * 100000


@pytest.mark.parametrize(("text", "says"), [(HUGE, "a number too long"), (DEEP, "nested too deeply")])
def test_read_dump_names_what_python_cannot_parse(text: str, says: str) -> None:
    with pytest.raises(InvalidValueError, match=f"the dump is not JSON dal can read \\({says}"):
        read_dump(io.StringIO(text))


@pytest.mark.parametrize("text", [HUGE, DEEP])
def test_cli_load_of_an_unparsable_dump_exits_2_writing_nothing(tmp_path: Path, text: str) -> None:
    (tmp_path / "bad.json").write_text(text)
    url = f"sqlite:///{tmp_path}/x.db"
    result = run_dal("load", "bad.json", "--persistent", url, *CLI, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr.startswith("error: bad.json is not JSON dal can read")
    assert "Traceback" not in result.stderr
    assert is_empty(dal.configure(url, "memory://", namespace="dal"))


def test_a_stale_key_blocking_a_load_is_named_stale_with_check_repair_as_the_remedy(local: Context) -> None:
    """A unique or one-to-one key naming an object that is not stored blocks its value, but no object
    holds it: the refusal says the key is stale and points to `dal check --repair`, which frees it."""
    rack = XRack(data={"name": "r1"})
    rack.save()
    server = XServer(data={"hostname": "s1", "rack": rack})
    server.save()
    gone = numbered_guid(0xE0)  # no document has this guid
    assert local.persistent.commit([], [Put(local.keys.unique("xrack", "name", "taken"), gone.encode()),
                                        Put(local.keys.onetoone("xconsole", "server", server.guid),
                                            gone.encode())]).ok
    racks = {"xrack": [{"guid": G1, "data": {"name": "taken", "row": 0}}]}
    consoles = {"xconsole": [{"guid": G2, "data": {"port": 7, "server_guid": server.guid}}]}
    dumps = [{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": hybrids}
             for hybrids in (racks, consoles)]
    for raw, error, kind, holder in ((dumps[0], UniqueConstraintError, "unique", "XRack"),
                                     (dumps[1], OneToOneError, "one-to-one", "XConsole")):
        with pytest.raises(error) as refused:
            load(local, parse_dump(raw))
        message = str(refused.value)
        assert f"a stale {kind} key gives to {holder} {gone}, an object that is not stored" in message
        assert "dal check --repair" in message
        assert "which stored" not in message and "in the store" not in message and "unlink" not in message
    check(local, repair=True)
    for raw in dumps:  # the stale keys deleted, both load
        load(local, parse_dump(raw))
    assert XRack(G1).name == "taken" and XConsole(G2).server_guid == server.guid
    assert check(local).clean


def test_a_stale_key_naming_a_stored_object_that_gave_the_value_up_is_named_stale(local: Context) -> None:
    """A unique or one-to-one key naming a stored object that no longer holds the value (or points at the
    target) blocks it all the same: renaming that object frees nothing, so the refusal names the key stale,
    as `dal check` does, with `dal check --repair` as the remedy, not a change in the store."""
    rack = XRack(data={"name": "r1"})
    rack.save()
    server = XServer(data={"hostname": "s1", "rack": rack})
    server.save()
    console = XConsole(data={"port": 1})  # points at no server
    console.save()
    assert local.persistent.commit([], [Put(local.keys.unique("xrack", "name", "taken"), rack.guid.encode()),
                                        Put(local.keys.onetoone("xconsole", "server", server.guid),
                                            console.guid.encode())]).ok
    racks = {"xrack": [{"guid": G1, "data": {"name": "taken", "row": 0}}]}
    consoles = {"xconsole": [{"guid": G2, "data": {"port": 7, "server_guid": server.guid}}]}
    dumps = [{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": hybrids}
             for hybrids in (racks, consoles)]
    for message in _refused_as_stale(local, dumps, (f"XRack {rack.guid}", f"XConsole {console.guid}")):
        assert "which stored" not in message and "in the store" not in message and "unlink" not in message
    assert {problem.kind.value for problem in check(local).problems} == {"stale_unique", "stale_onetoone"}
    held = {"xrack": [{"guid": G1, "data": {"name": "r1", "row": 0}}]}  # a value its owner does hold
    with pytest.raises(UniqueConstraintError, match=f"which stored XRack {rack.guid} holds") as refused:
        load(local, parse_dump({"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": held}))
    assert "dal check --repair" not in str(refused.value)
    check(local, repair=True)
    for raw in dumps:  # the stale keys deleted, both load
        load(local, parse_dump(raw))
    assert XRack(G1).name == "taken" and XConsole(G2).server_guid == server.guid
    assert check(local).clean


def _refused_as_stale(local: Context, dumps: list[dict[str, Any]], owners: tuple[str, str], *,
                      replace: bool = False) -> list[str]:
    """Load a rack dump and a console dump, each refused for a stale unique (one-to-one) key naming its
    owner as a stored object that does not hold the value (point at the target), with the repair advice;
    return the two messages."""
    messages = []
    for raw, error, says in ((dumps[0], UniqueConstraintError,
                              f"a stale unique key gives to {owners[0]}, a stored object that does not "
                              "hold it"),
                             (dumps[1], OneToOneError,
                              f"a stale one-to-one key gives to {owners[1]}, a stored object that does not "
                              "point at it")):
        with pytest.raises(error) as refused:
            load(local, parse_dump(raw), replace=replace)
        message = str(refused.value)
        assert says in message and "dal check --repair" in message
        messages.append(message)
    return messages


def test_a_stale_key_naming_the_replaced_object_itself_is_named_stale(local: Context) -> None:
    """Another client rewrote stored documents, leaving their unique and one-to-one keys: a key naming the
    very object a ``--replace`` load writes, whose stored document no longer holds the value, is stale too,
    and the refusal says so (not that the object took its own value while loading)."""
    rack = XRack(data={"name": "taken", "row": 0})
    rack.save()
    server = XServer(data={"hostname": "s1", "rack": rack})
    server.save()
    console = XConsole(data={"port": 1, "server": server})
    console.save()
    for hybrid, guid, change in (("xrack", rack.guid, {"name": "other"}),
                                 ("xconsole", console.guid, {"server_guid": None})):
        key = local.keys.doc(hybrid, guid)
        stored = local.persistent.get(key)
        assert stored is not None
        assert local.persistent.commit([], [Put(key, json.dumps({**json.loads(stored.value), **change})
                                                 .encode())]).ok
    dumps = [{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": hybrids} for hybrids in (
        {"xrack": [{"guid": rack.guid, "data": {"name": "taken", "row": 0}}]},
        {"xconsole": [{"guid": console.guid, "data": {"port": 1, "server_guid": server.guid}}]})]
    owners = (f"XRack {rack.guid} itself", f"XConsole {console.guid} itself")
    for message in _refused_as_stale(local, dumps, owners, replace=True):
        assert "while loading" not in message
    check(local, repair=True)
    for raw in dumps:
        load(local, parse_dump(raw), replace=True)
    assert XRack(rack.guid).name == "taken" and XConsole(console.guid).server_guid == server.guid
    assert check(local).clean


def test_a_stored_lone_surrogate_stops_the_dump_and_a_copy_names_the_source(local: Context) -> None:
    """A lone surrogate is valid escaped JSON, but no load takes it: the dump refuses it as it refuses a NaN,
    naming the object and field, rather than write a backup `dal load` would refuse; a copy refuses it
    with what to do in the source store (there is no file to fix)."""
    XRack(data={"name": "fine", "row": 0}).save()
    surrogate = b'{"name": "a\\ud800", "row": 0}'
    assert local.persistent.commit([], [Put(local.keys.doc("xrack", G1), surrogate)]).ok
    out = io.StringIO()
    with pytest.raises(BackendError, match=f"xrack {G1} holds a lone surrogate, .* \\(in 'name'\\)"):
        dump(local, out)
    with pytest.raises(InvalidValueError, match="lone surrogate") as refused:
        copy(local, in_namespace(local, "copied"))
    message = str(refused.value)
    assert "in the file" not in message
    assert "fix those documents in the source (`dal check` lists them)" in message
    assert is_empty(in_namespace(local, "copied"))


@pytest.mark.parametrize("text", [
    '{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {"xrack": [], "xrack": []}}',
    '{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {}, "counts": {}, "counts": {}}',
    '{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {"xrack": [{"guid": "' + G1
    + '", "data": {"name": "a", "name": "b", "row": 0}}]}}'])
def test_a_dump_naming_a_key_twice_is_refused_not_cut_to_the_last(text: str) -> None:
    """A JSON parser keeps the last of two equal keys: two dumps merged by hand would lose objects."""
    twice = r"the dump names '(xrack|counts|name)' twice in one JSON"
    with pytest.raises(InvalidValueError, match=twice) as refused:
        read_dump(io.StringIO(text))
    assert "give each key once (for a hybrid named twice" in str(refused.value)  # not a hybrid's advice only

