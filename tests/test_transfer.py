"""dump, load and copy: round trips, validation before any write, atomic batches, copies between stores."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from transfer_hybrids import XBuddy, XConsole, XNode, XPeer, XRack, XServer

import dal
from dal.backends.base import Check, CommitResult, DeletePrefix, Op, Put
from dal.config import Context
from dal.exceptions import DalError, InvalidValueError, ObjectNotFoundError, UniqueConstraintError
from dal.testing.servers import RunningServer
from dal.tools.check.integrity import check
from dal.tools.transfer.dump import dump, parse_dump, read_dump, select_hybrids
from dal.tools.transfer.load import copy, load

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def run_dal(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dal`` as a user would, with the transfer test hybrids importable."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "dal", *args], cwd=cwd, env=environment, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Sample:
    racks: list[XRack]
    servers: list[XServer]
    nodes: list[XNode]
    peer: XPeer
    buddy: XBuddy
    console: XConsole


def populate(servers: int = 5) -> Sample:
    """Save a little of everything: unique and indexed values, relations, a tree, a self link, a cycle."""
    racks = [XRack(data={"name": f"rack{n}", "row": n % 2}) for n in range(3)]
    for rack in racks:
        rack.save()
    made = []
    for n in range(servers):
        server = XServer(data={"hostname": f"host{n}", "status": ["NEW", "UP", "DOWN"][n % 3],
                               "rack": racks[n % 2], "tags": [f"t{n}"], "load": n / 4,
                               "serial": f"S{n}" if n % 2 else None,
                               "installed": dt.datetime(2024, 1, n + 1, 12, 30) if n % 2 else None})
        if n == 0:
            server.spare_rack = racks[2]
        server.save()
        made.append(server)
    root = XNode(data={"name": "root"})
    root.save()
    child = XNode(data={"name": "child", "parent": root})
    child.save()
    selfish = XNode(data={"name": "selfish"})
    selfish.parent_guid = selfish.guid  # an object may point at itself
    selfish.save()
    peer = XPeer(data={"name": "p"})
    peer.save()
    buddy = XBuddy(data={"name": "b", "peer": peer})
    buddy.save()
    peer.buddy = buddy  # now a cycle across two hybrids
    peer.save()
    console = XConsole(data={"port": 7, "server": made[0]})
    console.save()
    return Sample(racks, made, [root, child, selfish], peer, buddy, console)


def dump_text(context: Context, only: Sequence[Any] | None = None) -> str:
    out = io.StringIO()
    dump(context, out, only)
    return out.getvalue()


def in_namespace(context: Context, namespace: str) -> Context:
    return dal.configure(str(context.persistent_url.render(hide_password=False)),
                         str(context.volatile_url.render(hide_password=False)), namespace=namespace)


def clear(context: Context) -> None:
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def numbered_guid(n: int) -> str:
    """Return a guid whose text sorts as ``n`` does (a dump written by hand names its objects by guid)."""
    return str(uuid.UUID(int=n))


G1, G2, S1, NOWHERE = numbered_guid(0xA1), numbered_guid(0xA2), numbered_guid(0xB1), numbered_guid(0xC0)


def is_empty(context: Context) -> bool:
    """Tell whether the namespace holds nothing but the commit journal's passing records."""
    journal = context.keys.journal()
    return all(key.startswith(journal) for key, _ in context.persistent.scan(context.keys.root))


# --- library: dump and load ----------------------------------------------------------------


def test_dump_is_ordered_versioned_json_of_the_stored_documents(context: Context) -> None:
    sample = populate()
    text = dump_text(context)
    assert text == dump_text(context)  # deterministic
    parsed = json.loads(text)
    assert (parsed["format"], parsed["version"], parsed["namespace"]) == ("dal-dump", 1, context.namespace)
    names = list(parsed["hybrids"])
    assert names == sorted(names)
    assert {"xrack", "xserver", "xnode", "xpeer", "xbuddy", "xconsole"} <= set(names)
    for records in parsed["hybrids"].values():
        guids = [record["guid"] for record in records]
        assert guids == sorted(guids)
    assert parsed["counts"] == {name: len(records) for name, records in parsed["hybrids"].items()}
    first = next(r for r in parsed["hybrids"]["xserver"] if r["guid"] == sample.servers[0].guid)["data"]
    assert first["rack_guid"] == sample.racks[0].guid and first["spare_rack_guid"] == sample.racks[2].guid
    second = next(r for r in parsed["hybrids"]["xserver"] if r["guid"] == sample.servers[1].guid)["data"]
    assert second["installed"] == "2024-01-02T12:30:00" and second["tags"] == ["t1"]
    only = json.loads(dump_text(context, select_hybrids(["XRack"])))
    assert list(only["hybrids"]) == ["xrack"] and len(only["hybrids"]["xrack"]) == 3
    # documents of a hybrid this model does not declare are dumped as stored; a load names them
    assert context.persistent.commit([], [Put(context.keys.doc("zzgone", G1), b'{"a": 1}')]).ok
    everything = json.loads(dump_text(context))
    assert everything["hybrids"]["zzgone"] == [{"guid": G1, "data": {"a": 1}}]
    with pytest.raises(InvalidValueError, match=r"hybrid 'zzgone' \(1 objects\) is not declared"):
        load(in_namespace(context, context.namespace + "c"), parse_dump(everything))


def test_select_hybrids_by_class_or_logical_name() -> None:
    chosen = select_hybrids(["XServer", "xrack", "XRack"])
    assert chosen is not None and [meta.name for meta in chosen] == ["xrack", "xserver"]
    with pytest.raises(InvalidValueError, match=r"Nope.*known:"):
        select_hybrids(["Nope"])


def test_round_trip_rebuilds_every_key(context: Context) -> None:
    sample = populate()
    text = dump_text(context)
    target = in_namespace(context, context.namespace + "b")
    try:
        assert dal.DataList(XRack).guids == []  # an answer the load must not leave cached
        result = load(target, read_dump(io.StringIO(text)))
        assert sorted(dal.DataList(XRack).guids) == sorted(rack.guid for rack in sample.racks)
        assert result.total == sum(json.loads(text)["counts"].values()) and result.replaced == 0
        again = json.loads(dump_text(target))
        assert again["hybrids"] == json.loads(text)["hybrids"]
        assert check(target).clean  # every unique key, index entry and link is there, and nothing else
        rack = XRack(sample.racks[0].guid)
        on_rack = sorted(server.guid for server in sample.servers if server.rack_guid == rack.guid)
        assert sorted(rack.servers_guids) == on_rack
        assert XServer(sample.servers[0].guid).console_guid == sample.console.guid
        assert XNode(sample.nodes[0].guid).children_guids == [sample.nodes[1].guid]
        buddy = XPeer(sample.peer.guid).buddy
        assert buddy is not None and buddy.peer_guid == sample.peer.guid
        assert XServer(sample.servers[1].guid).installed == dt.datetime(2024, 1, 2, 12, 30)
        with pytest.raises(UniqueConstraintError, match=r"XServer\.hostname"):
            XServer(data={"hostname": "host1", "rack": rack}).save()
    finally:
        clear(target)


def test_load_orders_targets_first_and_never_splits_a_cycle(context: Context) -> None:
    # guids sort children before parents, so file order alone would write a child before its parent
    def node(n: int) -> str:
        return numbered_guid(n)

    def peer_guid(n: int) -> str:
        return numbered_guid(0x200 + n)

    def buddy_guid(n: int) -> str:
        return numbered_guid(0x300 + n)

    chain = [{"guid": node(99 - n), "data": {"name": f"n{n}", "parent_guid": node(100 - n) if n else None}}
             for n in range(30)]
    peers = [{"guid": peer_guid(n), "data": {"name": None, "buddy_guid": buddy_guid(n)}} for n in range(3)]
    buddies = [{"guid": buddy_guid(n), "data": {"name": None, "peer_guid": peer_guid((n + 1) % 3)}}
               for n in range(3)]
    document = {"format": "dal-dump", "version": 1, "namespace": "x",
                "hybrids": {"xnode": chain, "xpeer": peers, "xbuddy": buddies}}
    result = load(context, parse_dump(document), batch_size=2)
    assert result.total == 36
    assert result.batches == 15 + 1  # the chain two by two; the six-object cycle in one commit
    assert check(context).clean
    assert XNode(node(99)).children_guids == [node(98)]
    peer = XBuddy(buddy_guid(2)).peer
    assert peer is not None and peer.buddy_guid == buddy_guid(0)


BASE_RACK = {"name": "r", "row": 1}


@pytest.mark.parametrize(("document", "error", "words"), [
    ({"format": "other"}, InvalidValueError, ['not a dal dump', 'dal dump']),
    ({"format": "dal-dump", "version": 2, "namespace": "x", "hybrids": {}}, InvalidValueError,
     ["version 2", "upgrade dal"]),
    ({"hybrids": {"xrack": [{"guid": G1}]}}, InvalidValueError, ["hybrids.xrack[0]", '"data"']),
    ({"hybrids": {"xrack": [{"guid": "a/b", "data": BASE_RACK}]}}, InvalidValueError, ["'a/b'"]),
    ({"hybrids": {"xrack": [{"guid": G1, "data": BASE_RACK}]}, "counts": {"xrack": 2}}, InvalidValueError,
     ["truncated"]),
    # true and 1.0 compare equal to 1, but are no version, nor a count
    ({"version": True, "hybrids": {}}, InvalidValueError, ['"version": true', "whole number"]),
    ({"version": 1.0, "hybrids": {}}, InvalidValueError, ['"version": 1.0', "whole number"]),
    ({"hybrids": {"xrack": [{"guid": G1, "data": BASE_RACK}]}, "counts": {"xrack": True}}, InvalidValueError,
     ['"counts" must map each hybrid to its number of objects', "whole number"]),
    ({"hybrids": {"xrack": [{"guid": G1, "data": BASE_RACK}]}, "counts": {"xrack": 1.0}}, InvalidValueError,
     ['"counts" must map each hybrid to its number of objects', "whole number"]),
    ({"hybrids": {"nosuch": [{"guid": G1, "data": {}}]}}, InvalidValueError, ["'nosuch'", "--hybrids"]),
    ({"hybrids": {"xrack": [{"guid": G1, "data": {**BASE_RACK, "colour": "red"}}]}}, InvalidValueError,
     [f"xrack {G1}", "'colour'", "known: name, row"]),
    ({"hybrids": {"xrack": [{"guid": G1, "data": {**BASE_RACK, "row": "1"}}]}}, InvalidValueError,
     [f"xrack {G1}", "XRack.row must be int"]),
    ({"hybrids": {"xserver": [{"guid": S1, "data": {"hostname": "h", "rack_guid": G1,
                                                      "status": "BOGUS"}}]}},
     InvalidValueError, [f"xserver {S1}", "XServer.status must be one of"]),
    ({"hybrids": {"xserver": [{"guid": S1, "data": {"hostname": "h", "rack_guid": G1,
                                                      "installed": "yesterday"}}]}},
     InvalidValueError, [f"xserver {S1}", "XServer.installed"]),
    ({"hybrids": {"xserver": [{"guid": S1, "data": {"hostname": "h", "rack_guid": G1, "tags": [1]}}]}},
     InvalidValueError, ["XServer.tags"]),
    ({"hybrids": {"xserver": [{"guid": S1, "data": {"rack_guid": G1}}]}}, InvalidValueError,
     [f"xserver {S1}", "XServer.hostname is mandatory but missing"]),
    ({"hybrids": {"xserver": [{"guid": S1, "data": {"hostname": "h", "rack_guid": 5}}]}}, InvalidValueError,
     ["XServer.rack_guid must be a guid"]),
    ({"hybrids": {"xrack": [{"guid": G1, "data": BASE_RACK}, {"guid": G2, "data": BASE_RACK}]}},
     UniqueConstraintError, ["XRack.name must be unique", f"{G1} and {G2}"]),
    ({"hybrids": {"xserver": [{"guid": S1, "data": {"hostname": "h", "rack_guid": NOWHERE}}]}},
     ObjectNotFoundError, [f"XServer {S1}.rack points at XRack {NOWHERE}", "neither in it nor stored"]),
])
def test_load_validates_everything_before_writing(context: Context, document: dict[str, Any],
                                                  error: type[Exception], words: list[str]) -> None:
    full = {"format": "dal-dump", "version": 1, "namespace": "x", **document}
    # a valid object beside the bad one: it must not be written either
    if "hybrids" in document and "xrack" not in document["hybrids"]:
        fine = [{"guid": numbered_guid(0xD0), "data": {"name": "fine", "row": 0}}]
        full["hybrids"] = {**document["hybrids"], "xrack": fine}
    with pytest.raises(error) as caught:
        load(context, parse_dump(full))
    for word in words:
        assert word in str(caught.value)
    assert is_empty(context)


def test_load_refuses_stored_guids_unless_replacing(context: Context) -> None:
    sample = populate(servers=3)
    text = dump_text(context)
    with pytest.raises(DalError, match=r"already stored(.|\n)*--replace"):
        load(context, read_dump(io.StringIO(text)))
    edited = json.loads(text)
    rack = next(r for r in edited["hybrids"]["xrack"] if r["guid"] == sample.racks[0].guid)
    rack["data"].update(name="renamed", row=7)
    server = next(r for r in edited["hybrids"]["xserver"] if r["guid"] == sample.servers[0].guid)
    server["data"]["rack_guid"] = sample.racks[1].guid
    assert sample.servers[0].guid not in XRack(sample.racks[1].guid).servers_guids  # now cached
    result = load(context, parse_dump(edited), replace=True)
    assert result.replaced == result.total
    assert XRack(sample.racks[0].guid).name == "renamed"  # not a stale cached document
    assert XServer(sample.servers[0].guid).rack_guid == sample.racks[1].guid
    assert sample.servers[0].guid in XRack(sample.racks[1].guid).servers_guids
    assert sample.servers[0].guid not in XRack(sample.racks[0].guid).servers_guids
    XRack(data={"name": "rack0"}).save()  # the old unique value was released
    assert check(context).clean


def test_load_refuses_a_unique_value_another_stored_object_holds(context: Context) -> None:
    XRack(data={"name": "taken"}).save()
    document = {"format": "dal-dump", "version": 1, "namespace": "x",
                "hybrids": {"xrack": [{"guid": S1, "data": {"name": "taken", "row": 0}}]}}
    with pytest.raises(UniqueConstraintError, match=r"XRack\.name.*'taken'"):
        load(context, parse_dump(document))
    assert context.persistent.get(context.keys.doc("xrack", S1)) is None


def test_a_failed_batch_writes_nothing_and_earlier_batches_stay_whole(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    def rack(n: int) -> str:
        return numbered_guid(0x100 + n)

    racks = [{"guid": rack(n), "data": {"name": f"r{n}", "row": n}} for n in range(12)]
    document = {"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {"xrack": racks}}
    commits: list[int] = []
    real = context.commit

    def commit(checks: Sequence[Check], ops: Sequence[Op], invalidate: Sequence[str] = ()) -> CommitResult:
        commits.append(len(ops))
        if len(commits) == 3:  # another writer takes a unique value of rack(9) just before batch 3
            assert real([], [Put(context.keys.unique("xrack", "name", "r9"), b"intruder")]).ok
        return real(checks, ops, invalidate)

    monkeypatch.setattr(context, "commit", commit)
    done: list[int] = []
    with pytest.raises(UniqueConstraintError) as caught:
        load(context, parse_dump(document), batch_size=4, progress=done.append)
    message = str(caught.value)
    assert "XRack.name" in message and rack(9) in message and "intruder" in message
    assert "Batch 3 of 3 was not written; batches 1-2 (8 objects) were written" in message
    assert done == [4, 4]
    keys = [key for key, _ in context.persistent.scan(context.keys.root)]
    for n in range(12):
        present = [key for key in keys if rack(n) in key]
        assert (context.persistent.get(context.keys.doc("xrack", rack(n))) is not None) == (n < 8)
        assert len(present) == (3 if n < 8 else 0)  # document and two index entries, or nothing
    unique_owners = {entry.value for key, entry in context.persistent.scan(f"{context.keys.root}u/")}
    assert unique_owners == {rack(n).encode() for n in range(8)} | {b"intruder"}


def test_load_stays_within_etcd_transaction_limits(context: Context) -> None:
    def rack(n: int) -> str:
        return numbered_guid(0x1000 + n)

    racks = [{"guid": rack(n), "data": {"name": f"r{n}", "row": n}} for n in range(60)]
    servers = [{"guid": numbered_guid(0x2000 + n),
                "data": {"hostname": f"h{n}", "serial": f"S{n}", "rack_guid": rack(n % 60),
                         "spare_rack_guid": rack((n + 1) % 60)}} for n in range(120)]
    document = {"format": "dal-dump", "version": 1, "namespace": "x",
                "hybrids": {"xrack": racks, "xserver": servers}}
    result = load(context, parse_dump(document), batch_size=1000)
    assert result.total == 180 and result.batches > 1  # cut by the 128 operations per commit etcd allows
    assert check(context).clean


# --- library: copy ----------------------------------------------------------------------------


@pytest.mark.etcd
def test_copy_from_sqlite_to_etcd_verifies_counts(tmp_path: Path, etcd_server: RunningServer,
                                                  namespace: str) -> None:
    source = dal.configure(f"sqlite:///{tmp_path / 'src.sqlite3'}", "memory://", namespace=namespace)
    populate(servers=7)
    source_text = dump_text(source)
    destination = dal.configure(etcd_server.url, "memory://", namespace=namespace)
    try:
        sizes: list[int] = []
        written: list[int] = []

        def progress(total: int) -> Callable[[int], None]:
            sizes.append(total)
            return written.append

        result = copy(source, destination, progress=progress)
        assert result.mismatches == {}
        assert result.source["xserver"] == result.destination["xserver"] == 7
        assert result.source["xrack"] == 3 and sizes == [result.load.total] == [sum(written)]
        assert json.loads(dump_text(destination))["hybrids"] == json.loads(source_text)["hybrids"]
        assert check(destination).clean
        with pytest.raises(DalError, match=r"is not empty.*--replace"):
            copy(source, destination)
        XRack(data={"name": "only-in-destination"}).save()
        again = copy(source, destination, replace=True)
        assert again.mismatches == {"xrack": (3, 4)} and again.load.replaced == again.load.total
    finally:
        clear(destination)


def test_copy_refuses_to_copy_a_namespace_onto_itself(context: Context) -> None:
    with pytest.raises(InvalidValueError, match="both namespace"):
        copy(context, context)


# --- command line ---------------------------------------------------------------------------


def sqlite_with_sample(tmp_path: Path, namespace: str = "dal") -> tuple[str, Sample]:
    url = f"sqlite:///{tmp_path / 'dal.sqlite3'}"
    dal.configure(url, "memory://", namespace=namespace)
    return url, populate(servers=4)


CLI = ("--hybrids", "transfer_hybrids")


def test_cli_dump_to_stdout_and_to_a_file(tmp_path: Path) -> None:
    url, _ = sqlite_with_sample(tmp_path)
    shown = run_dal("dump", "--persistent", url, *CLI, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == dump_text(dal.configure(url, "memory://", namespace="dal"))
    assert "dumped 13 objects of 6 hybrids" in shown.stderr
    written = run_dal("dump", "--persistent", url, *CLI, "-o", "out.json", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "out.json").read_text() == shown.stdout and written.stdout == ""
    only = run_dal("dump", "--persistent", url, *CLI, "--only", "XRack,xnode", cwd=tmp_path)
    assert list(json.loads(only.stdout)["hybrids"]) == ["xnode", "xrack"]


def test_cli_load_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    url, sample = sqlite_with_sample(tmp_path)
    assert run_dal("dump", "--persistent", url, *CLI, "-o", "out.json", cwd=tmp_path).returncode == 0
    loaded = run_dal("load", "out.json", "--persistent", url, *CLI, "--namespace", "copy1", cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 13 objects" in loaded.stdout and "namespace 'copy1'" in loaded.stdout
    assert "load [" in loaded.stderr  # the progress bar
    piped = run_dal("load", "-", "--persistent", url, *CLI, "--namespace", "copy2", "--batch-size", "3",
                    cwd=tmp_path, stdin=(tmp_path / "out.json").read_text())
    assert piped.returncode == 0, piped.stderr
    assert "loaded 13 objects" in piped.stdout and "commits" in piped.stdout
    dal.configure(url, "memory://", namespace="copy2")
    assert XRack(sample.racks[0].guid).name == "rack0"
    again = run_dal("load", "out.json", "--persistent", url, *CLI, "--namespace", "copy1", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "--replace" in again.stderr
    replaced = run_dal("load", "out.json", "--replace", "--persistent", url, *CLI, "--namespace", "copy1",
                       cwd=tmp_path)
    assert replaced.returncode == 0 and "13 of them replacing stored objects" in replaced.stdout


def test_cli_load_names_what_is_wrong(tmp_path: Path) -> None:
    bad = {"format": "dal-dump", "version": 1, "namespace": "x",
           "hybrids": {"xrack": [{"guid": G1, "data": {"name": "r", "row": "one"}}]}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = run_dal("load", "bad.json", *CLI, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert f"xrack {G1}" in result.stderr and "XRack.row" in result.stderr
    (tmp_path / "torn.json").write_text(json.dumps(bad)[:40])
    torn = run_dal("load", "torn.json", *CLI, cwd=tmp_path)
    assert torn.returncode == 2 and "is not JSON" in torn.stderr


def test_cli_copy_verifies_counts(tmp_path: Path) -> None:
    url, _ = sqlite_with_sample(tmp_path)
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    copied = run_dal("copy", url, other, *CLI, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert "wrote 13 objects" in copied.stdout and "verified" in copied.stdout
    row = next(line for line in copied.stdout.splitlines() if line.strip().startswith("xserver"))
    assert row.split() == ["xserver", "4", "4"]
    refused = run_dal("copy", url, other, *CLI, cwd=tmp_path)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    dal.configure(other, "memory://", namespace="dal")
    XRack(data={"name": "extra"}).save()
    mismatch = run_dal("copy", url, other, "--replace", *CLI, cwd=tmp_path)
    assert mismatch.returncode == 1, mismatch.stderr
    assert "MISMATCH" in mismatch.stdout and "xrack (source 3, destination 4)" in mismatch.stdout



def test_cli_copy_names_its_source_as_given_never_with_the_read_only_mode(tmp_path: Path) -> None:
    """The CLI opens the source read-only (``mode=rw``, so a mistyped path is not created); a message
    naming it shows the URL as the user wrote it."""
    url, _ = sqlite_with_sample(tmp_path)
    onto_itself = run_dal("copy", url, url, *CLI, cwd=tmp_path)
    assert onto_itself.returncode == 2, onto_itself.stdout + onto_itself.stderr
    assert f"both namespace 'dal' of {url};" in onto_itself.stderr, onto_itself.stderr
    assert "mode=rw" not in onto_itself.stdout + onto_itself.stderr

@pytest.mark.etcd
def test_cli_copy_from_the_embedded_default_to_etcd(tmp_path: Path, etcd_server: RunningServer,
                                                    namespace: str) -> None:
    sqlite_with_sample(tmp_path, namespace)
    try:
        result = run_dal("copy", "sqlite:///dal.sqlite3", etcd_server.url, "--namespace", namespace, *CLI,
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"to namespace '{namespace}' of {etcd_server.url}" in result.stdout
        assert "verified" in result.stdout
    finally:
        clear(dal.configure(etcd_server.url, "memory://", namespace=namespace))


@pytest.mark.parametrize("name", ["dump", "load", "copy"])
def test_cli_help(tmp_path: Path, name: str) -> None:
    result = run_dal(name, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--hybrids" in result.stdout and "--namespace" in result.stdout


@pytest.mark.parametrize("args", [["dump", "--only", "Nope"], ["load", "missing.json"],
                                  ["load", "x.json", "--batch-size", "0"],
                                  ["copy", "nosuch://x", "sqlite:///y.sqlite3"],
                                  ["copy", "sqlite:///a.sqlite3", "etcd://bob:hunter22@127.0.0.1:1?timeout=0.3"]])
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "x.json").write_text('{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {}}')
    result = run_dal(*args, *CLI, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr
    assert "hunter22" not in result.stdout + result.stderr


# --- interrupted loads ------------------------------------------------------------------------


def _interrupt_commit(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """Make the ``at``-th commit of racks (a batch) raise KeyboardInterrupt (Ctrl-C) before it is sent."""
    batches: list[int] = []
    real = Context.commit

    def commit(self: Context, checks: Sequence[Check], ops: Sequence[Op],
               invalidate: Sequence[str] = ()) -> CommitResult:
        documents = self.keys.doc("xrack", "")
        if any(isinstance(op, Put) and op.key.startswith(documents) for op in ops):
            batches.append(len(ops))
            if len(batches) == at:
                raise KeyboardInterrupt
        return real(self, checks, ops, invalidate)

    monkeypatch.setattr(Context, "commit", commit)


def _rack_guid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"  # in guid order as in number order


def _racks(count: int) -> dict[str, Any]:
    return {"format": "dal-dump", "version": 1, "namespace": "x",
            "hybrids": {"xrack": [{"guid": _rack_guid(n), "data": {"name": f"r{n}", "row": n}}
                                  for n in range(count)]}}


def test_an_interrupted_load_says_which_batches_it_wrote(context: Context,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from dal.tools.transfer.load import LoadInterrupted

    _interrupt_commit(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt) as caught:
        load(context, parse_dump(_racks(12)), batch_size=4)
    interrupted = caught.value
    assert isinstance(interrupted, LoadInterrupted)
    assert (interrupted.written_batches, interrupted.batches) == (2, 3)
    assert (interrupted.written_objects, interrupted.objects) == (8, 12)
    assert "batches 1-2 of 3 (8 of 12 objects) were written and are kept" in str(interrupted)
    assert "--replace" in str(interrupted)
    monkeypatch.undo()
    stored = [n for n in range(12) if context.persistent.get(context.keys.doc("xrack", _rack_guid(n)))]
    assert stored == list(range(8))


def test_ctrl_c_during_dal_load_prints_the_command_that_finishes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import shlex

    from dal.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])  # main() puts the working directory on it
    (tmp_path / "racks.json").write_text(json.dumps(_racks(12)))
    url = f"sqlite:///{tmp_path / 'dal.sqlite3'}"
    for variable in ("DAL_PERSISTENT_URL", "DAL_VOLATILE_URL", "DAL_NAMESPACE", "DAL_HYBRIDS"):
        monkeypatch.delenv(variable, raising=False)
    args = ["load", "racks.json", "--persistent", url, "--namespace", "restored", *CLI, "--batch-size", "4"]
    _interrupt_commit(monkeypatch, 3)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "error: interrupted" in err
    assert "batches 1-2 of 3 (8 of 12 objects) were written and are kept" in err
    finish = f"dal load racks.json --replace --persistent {url} --namespace restored " \
             "--hybrids transfer_hybrids --batch-size 4"
    assert f"finish the load with: {finish}" in err, err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])
    assert main(shlex.split(finish)[1:]) == 0  # the printed command, as printed, finishes the load
    out = capsys.readouterr().out
    assert "loaded 12 objects (xrack 12) in 3 commits, 8 of them replacing stored objects" in out


# --- copies to Redis and back -------------------------------------------------------------------


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "fakeredis"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """A Redis store for both roles: the session's redis-server (database 3) or a fake of this test's own."""
    if request.param == "redis":
        server: RunningServer = request.getfixturevalue("redis_server")
        return f"{server.url}/3"
    return f"fakeredis://{uuid.uuid4().hex[:8]}"


def stored_documents(context: Context) -> dict[str, bytes]:
    """Return every stored object document of the namespace, by key, as the store holds it."""
    return {key: entry.value for key, entry in context.persistent.scan(context.keys.root + "o/")}


def test_copy_from_sqlite_to_redis_and_back_keeps_every_document(tmp_path: Path, redis_url: str,
                                                                 namespace: str) -> None:
    source = dal.configure(f"sqlite:///{tmp_path / 'src.sqlite3'}", "memory://", namespace=namespace)
    sample = populate(servers=7)
    source_text = dump_text(source)
    documents = stored_documents(source)
    assert len(documents) == sum(json.loads(source_text)["counts"].values()) == 16
    destination = dal.configure(redis_url, redis_url, namespace=namespace)
    try:
        there = copy(source, destination)
        assert there.mismatches == {}
        assert there.source == there.destination and there.destination["xserver"] == 7
        assert json.loads(dump_text(destination))["hybrids"] == json.loads(source_text)["hybrids"]
        assert stored_documents(destination) == documents  # byte for byte
        assert check(destination).clean  # unique keys, index entries and links rebuilt on Redis
        rack = XRack(sample.racks[0].guid)  # read from Redis: the destination is the configured context
        assert sorted(rack.servers_guids) == sorted(
            server.guid for server in sample.servers if server.rack_guid == rack.guid)
        assert XServer(sample.servers[0].guid).console_guid == sample.console.guid
        with pytest.raises(DalError, match=r"is not empty.*--replace"):
            copy(source, destination)
        back = dal.configure(f"sqlite:///{tmp_path / 'back.sqlite3'}", "memory://", namespace=namespace)
        returned = copy(destination, back)
        assert returned.mismatches == {} and returned.destination == there.source
        assert dump_text(back) == source_text
        assert stored_documents(back) == documents
        assert check(back).clean
    finally:
        clear(destination)


@pytest.mark.redis
def test_cli_copy_sqlite_to_redis_checks_clean_and_copies_back(tmp_path: Path, redis_server: RunningServer,
                                                              namespace: str) -> None:
    sqlite_with_sample(tmp_path, namespace)
    url = f"{redis_server.url}/4"
    try:
        there = run_dal("copy", "sqlite:///dal.sqlite3", url, "--namespace", namespace, *CLI, cwd=tmp_path)
        assert there.returncode == 0, there.stderr
        assert f"to namespace '{namespace}' of {url}" in there.stdout
        assert "wrote 13 objects" in there.stdout and "verified" in there.stdout
        checked = run_dal("check", "--persistent", url, "--namespace", namespace, *CLI, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        back = run_dal("copy", url, "sqlite:///back.sqlite3", "--namespace", namespace, *CLI, cwd=tmp_path)
        assert back.returncode == 0, back.stderr
        assert "wrote 13 objects" in back.stdout and "verified" in back.stdout
        dumps = [run_dal("dump", "--persistent", where, "--namespace", namespace, *CLI, cwd=tmp_path)
                 for where in ("sqlite:///dal.sqlite3", url, "sqlite:///back.sqlite3")]
        assert all(dumped.returncode == 0 for dumped in dumps), [dumped.stderr for dumped in dumps]
        assert dumps[0].stdout == dumps[1].stdout == dumps[2].stdout
        assert sum(json.loads(dumps[0].stdout)["counts"].values()) == 13
        checked_back = run_dal("check", "--persistent", "sqlite:///back.sqlite3", "--namespace", namespace,
                               *CLI, cwd=tmp_path)
        assert checked_back.returncode == 0, checked_back.stdout + checked_back.stderr
    finally:
        clear(dal.configure(url, "memory://", namespace=namespace))
