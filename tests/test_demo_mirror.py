"""The sample model's mirrored hybrid (``VirtualMachine`` of a ``Cluster``) and the demo's mirror steps.

The remote is the demo's own loopback server (:mod:`dal.cli.demo_remote`), a real HTTP server
that counts the calls it answers; the client is the sample model's :mod:`dal.hybrids.remoteapi`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_dal

import dal.mirror
from dal import DataList
from dal.cli.demo_remote import BULK, INSTANCE, DemoRemote
from dal.config import Context
from dal.hybrids import Cluster, VirtualMachine
from dal.hybrids.remoteapi import RemoteAPI, RemoteAPIError


@pytest.fixture
def remote() -> Iterator[DemoRemote]:
    with DemoRemote(username="demo", password="pa55word") as running:
        for number in (1, 2, 3):
            running.add(f"vm{number}", memory=256 * number)
        yield running


# --- the remote and its client ----------------------------------------------------------------


def test_the_client_reads_one_instance_and_all_of_them_in_one_call(remote: DemoRemote) -> None:
    client = RemoteAPI(**remote.settings())
    try:
        one = client.get_instance("vm2")
        assert (one["name"], one["status"], one["beparams"]["memory"]) == ("vm2", "running", 512)
        every = client.get_instances()
        assert [item["name"] for item in every] == ["vm1", "vm2", "vm3"]
        assert (remote.calls[INSTANCE], remote.calls[BULK]) == (1, 1)
    finally:
        client.close()


def test_the_remote_refuses_and_fails_as_told(remote: DemoRemote) -> None:
    client = RemoteAPI(**remote.settings())
    with pytest.raises(RemoteAPIError, match="HTTP 404: no instance 'vm9'"):
        client.get_instance("vm9")
    remote.failing = True
    with pytest.raises(RemoteAPIError, match="HTTP 503: the remote is down") as failed:
        client.get_instances()
    assert "pa55word" not in str(failed.value) and "pa55word" not in repr(client)
    remote.failing = False
    assert client.get_instance("vm1")["name"] == "vm1"  # the same client works again
    wrong = RemoteAPI(**{**remote.settings(), "password": "guess"})
    with pytest.raises(RemoteAPIError, match="HTTP 401"):
        wrong.get_instance("vm1")
    client.close()
    with pytest.raises(RemoteAPIError, match="closed"):
        client.get_instance("vm1")
    assert remote.calls[INSTANCE] == 3 and remote.calls[BULK] == 1  # a closed client calls nothing


def test_a_change_can_leave_the_mtime_where_it_was(remote: DemoRemote) -> None:
    before = remote.instance("vm1")
    assert before is not None
    remote.change("vm1", status="ADMIN_down", touch_mtime=False)
    after = remote.instance("vm1")
    assert after is not None and after["status"] == "ADMIN_down" and after["mtime"] == before["mtime"]
    remote.change("vm1", memory=2048)
    moved = remote.instance("vm1")
    assert moved is not None and moved["beparams"]["memory"] == 2048 and moved["mtime"] > before["mtime"]


def test_the_remote_stops_and_closes_its_port() -> None:
    remote = DemoRemote().start()
    settings = remote.settings()
    client = RemoteAPI(**settings, timeout=2.0)
    assert client.get_instances() == []
    client.close()
    remote.stop()
    remote.stop()  # again: nothing to do
    with pytest.raises(RuntimeError, match="not running"):
        remote.settings()
    late = RemoteAPI(**settings, timeout=2.0)
    with pytest.raises(RemoteAPIError, match="ConnectionRefusedError"):
        late.get_instances()


# --- the sample model's mirrored hybrid ------------------------------------------------------


def test_virtual_machine_is_mirrored_and_parses_status_and_ram() -> None:
    mirror = VirtualMachine._meta.mirror
    assert mirror is not None and (mirror.timeout, mirror.refresh_every) == (600, 300)
    assert VirtualMachine._meta.properties["status"].indexed
    assert Cluster._meta.mirror is None and VirtualMachine._meta.relations["cluster"].target is Cluster
    answer = {"name": "vm1", "status": "ERROR_down", "beparams": {"memory": 1536}, "mtime": 5, "os": "x"}
    assert VirtualMachine.parse_persistent_info(answer) == {"status": "ERROR_down", "ram": 1536}
    with pytest.raises(KeyError):  # an answer without them is refused (the mirror records the error)
        VirtualMachine.parse_persistent_info({"name": "vm1"})


def machines(cluster: Cluster, *names: str) -> list[str]:
    saved = []
    for name in names:
        machine = VirtualMachine(data={"hostname": name, "cluster": cluster, "owner": "ops"})
        machine.save()
        saved.append(str(machine.guid))
    return saved


def test_virtual_machines_refresh_one_by_one_and_in_bulk_per_cluster(context: Context) -> None:
    with DemoRemote() as first, DemoRemote(username="u", password="p") as second:
        first.add("a1", memory=1024)
        first.add("a2", status="ADMIN_down")
        second.add("b1", memory=2048)
        one = Cluster(data={"name": "one", **first.settings()})
        two = Cluster(data={"name": "two", **second.settings()})
        one.save()
        two.save()
        a1, a2, gone = machines(one, "a1", "a2", "a-gone")
        (b1,) = machines(two, "b1")
        assert len(DataList(VirtualMachine)) == 4
        assert sum(first.calls.values()) + sum(second.calls.values()) == 0  # building and listing: none

        assert (VirtualMachine(a1).ram, VirtualMachine(a1).status) == (1024, "running")
        assert (first.calls[INSTANCE], first.calls[BULK]) == (1, 0)

        loaded = [VirtualMachine(guid) for guid in (a2, gone, b1)]
        with dal.mirror.frozen():  # read hostnames and clusters, as the mirror does, without refreshing
            answers = VirtualMachine._refresh_many(loaded)
        assert set(answers) == {a2, b1}  # an instance its cluster does not list is left out
        assert answers[a2]["status"] == "ADMIN_down" and answers[b1]["beparams"]["memory"] == 2048
        assert (first.calls[BULK], second.calls[BULK]) == (1, 1)  # one bulk call per cluster
        assert first.calls[INSTANCE] == 1 and second.calls[INSTANCE] == 0


def test_a_cluster_keeps_one_client_per_settings(context: Context) -> None:
    with DemoRemote() as remote:
        cluster = Cluster(data={"name": "c", **remote.settings()})
        cluster.save()
        client = cluster.client()
        assert cluster.client() is client and Cluster(cluster.guid).client() is client
        cluster.username, cluster.password = "someone", "new-password"
        cluster.save()
        changed = cluster.client()
        assert changed is not client and client.closed and not changed.closed
        assert "new-password" not in repr(changed)
        changed.close()


# --- the demo's mirror steps -------------------------------------------------------------------


def assert_mirror_steps(out: str) -> None:
    """Assert the remote call counts the demo's mirror steps print (measured by the remote)."""
    assert re.search(r"mirror +6 virtual machines of cluster1 saved, listed \(6\) and queried \(status "
                     r"running: 0\): remote calls: 0 single, 0 bulk; 6 stale \(never refreshed\)", out), out
    assert "vm1.status under dal.mirror.frozen(): None, the stored data (remote calls: 0 single, " \
           "0 bulk)" in out
    assert "vm1.status read twice: 'running' 'running', ram 256: one lazy refresh (remote calls: 1 single, " \
           "0 bulk), then stale=False" in out
    assert "another copy of vm1: status 'running', fresh for 600 s (remote calls: 0 single, 0 bulk)" in out
    assert "5 stale of 6 listed, then read (running 6): remote calls: 0 single, 1 bulk" in out
    assert "status EQUALS 'running' -> 6 (index lookup on VirtualMachine; parsed from the answers): " \
           "remote calls: 0 single, 0 bulk" in out
    assert re.search(r"vm2\.ignore_cache set \(a job pending\), remote down: vm2\.status 'running' served "
                     r"from the store, error \"RemoteAPIError: GET /instances/vm2 on RemoteAPI\(http://"
                     r"127\.0\.0\.1:\d+\): HTTP 503: the remote is down \(the demo's switch\)\": "
                     r"remote calls: 1 single, 0 bulk", out), out
    assert "refresh_info() raises MirrorError from RemoteAPIError (remote calls: 1 single, 0 bulk); " \
           "cached_at kept" in out
    assert "remote back, next read retries: status 'ADMIN_down' (mtime unchanged: answers are compared " \
           "whole), error None, owner 'team-a' kept: remote calls: 1 single, 0 bulk" in out


def test_the_demo_mirrors_and_runs_the_refresher_as_another_process(tmp_path: Path) -> None:
    result = run_dal("demo", "--count", "2", "--erd", "", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_mirror_steps(out)
    assert "refresher 3 stale; `dal refresh --once` (another process): exit 0, remote calls: 0 single, " \
           "1 bulk; 0 stale left" in out
    assert "| VirtualMachine: 3 stale: 3 changed, 0 unchanged, 0 failed" in out
    assert "| refreshed 1 of 1 mirrored hybrids: 3 stale objects, 3 changed" in out
    assert re.search(r"check +clean: \d+ documents of 7 hybrids", out), out  # the check ran before the mirror
    # what the demo left is clean, and `dal check` sees its virtual machines with their parsed status
    checked = run_dal("check", cwd=tmp_path)
    assert checked.returncode == 0 and "clean: no problems found" in checked.stdout, checked.stdout
    dumped = run_dal("dump", "--only", "VirtualMachine", cwd=tmp_path)
    assert dumped.returncode == 0, dumped.stderr
    stored = [record["data"] for record in json.loads(dumped.stdout)["hybrids"]["virtualmachine"]]
    down = sorted(record["hostname"] for record in stored if record["status"] == "ADMIN_down")
    assert down == ["vm2", "vm7", "vm8", "vm9"]  # vm2 changed on the remote, the refresher's three
    assert all(record["info"]["status"] == record["status"] and record["error"] is None for record in stored)


@pytest.mark.parametrize("scheme", ["memory", "fakeredis"])
def test_the_demo_on_a_store_of_its_own_process_refreshes_in_process(tmp_path: Path, scheme: str) -> None:
    result = run_dal("demo", "--count", "2", "--erd", "", "--persistent", f"{scheme}://", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_mirror_steps(out)
    assert f"`dal refresh --once` (in this process: {scheme}:// is not shared): exit 0, remote calls: " \
           "0 single, 1 bulk; 0 stale left" in out
    assert "| VirtualMachine: 3 stale: 3 changed, 0 unchanged, 0 failed (dal.mirror.refresh_stale" in out


@pytest.mark.etcd
@pytest.mark.memcached
def test_the_demo_mirrors_on_servers(tmp_path: Path, etcd_server: Any, memcached_server: Any) -> None:
    result = run_dal("demo", "--count", "2", "--erd", "", "--persistent", etcd_server.url,
                     "--volatile", memcached_server.url, "--namespace", "mirrordemo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_mirror_steps(out)
    assert "refresher 3 stale; `dal refresh --once` (another process): exit 0, remote calls: 0 single, " \
           "1 bulk; 0 stale left" in out
