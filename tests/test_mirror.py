"""Mirrored hybrids: lazy refreshes from a real loopback HTTP remote, whose calls are counted.

Every test runs on the embedded default (SQLite + process memory) and on etcd + memcached.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from mirror_hybrids import (
    TIMEOUT,
    BadParseVM,
    Clock,
    MirrorCluster,
    MirroredVM,
    SingleVM,
    VMGrant,
    answer,
    instance_path,
)

import dal.mirror
from dal import DataList, DataObject, Mirror, Property
from dal.config import Context
from dal.exceptions import (
    ConfigurationError,
    InvalidValueError,
    MirrorError,
    ObjectNotFoundError,
    ReadOnlyFieldError,
)
from dal.structures import MIRROR_NAMES
from dal.testing.remote import Remote, RemoteError


def vm(remote: Remote, status: str = "running", **fields: Any) -> MirroredVM:
    """Store a never-refreshed VM, and give the remote an answer about it."""
    hostname = f"vm-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname, status)
    obj = MirroredVM(data={"hostname": hostname, **fields})
    obj.save()
    return obj


def test_building_listing_iterating_counting_and_querying_call_no_remote(
        context: Context, remote: Remote, clock: Clock) -> None:
    cluster = MirrorCluster(data={"name": "c1"})
    cluster.save()
    stored = [vm(remote, cluster=cluster) for _ in range(5)]
    loaded = MirroredVM(stored[0].guid)
    listed = DataList(MirroredVM)
    assert len(listed) == 5
    assert {obj.guid for obj in listed} == {obj.guid for obj in stored}
    assert len(DataList(MirroredVM, {"items": [("status", "EQUALS", None)]})) == 5
    assert len(DataList(MirroredVM, {"items": [("cluster.name", "EQUALS", "c1")]})) == 5
    assert [obj.guid for obj in cluster.vms] and loaded.guid == stored[0].guid
    # the state of the mirror itself never refreshes
    assert (loaded.stale, loaded.cached_at, loaded.error, loaded.ignore_cache) == (True, None, None, False)
    assert remote.count() == 0


def test_a_stale_object_read_twice_calls_the_remote_once(context: Context, remote: Remote,
                                                         clock: Clock) -> None:
    obj = MirroredVM(vm(remote, status="running").guid)
    assert obj.status == "running"
    assert (obj.ram, obj.info["name"], obj.hostname) == (512, obj.hostname, obj.hostname)
    assert remote.count() == 1
    assert (obj.cached_at, obj.error, obj.stale) == (clock.time, None, False)
    assert MirroredVM(obj.guid).status == "running", "stored: another instance reads it without a call"
    assert remote.count() == 1
    clock.time += TIMEOUT  # timed out: the next instance refreshes again
    assert MirroredVM(obj.guid).stale
    assert MirroredVM(obj.guid).ram == 512
    assert remote.count() == 2
    assert (context.stats["mirror.mirroredvm.remote_calls"], context.stats["mirror.mirroredvm.refreshed"],
            context.stats["mirror.mirroredvm.unchanged"]) == (2, 1, 1)


def test_a_list_of_100_stale_objects_refreshes_with_one_bulk_call(context: Context, remote: Remote,
                                                                   clock: Clock) -> None:
    stored = {vm(remote, status="stopped").guid for _ in range(100)}
    listed = list(DataList(MirroredVM))
    assert remote.count() == 0
    assert listed[37].status == "stopped"
    assert remote.calls() == {"/bulk": 1}
    assert {obj.guid for obj in listed if obj.status == "stopped" and not obj.stale} == stored
    assert remote.calls() == {"/bulk": 1}


def test_without_a_bulk_loader_each_object_of_a_list_refreshes_on_its_own_first_read(
        context: Context, remote: Remote, clock: Clock) -> None:
    for number in range(10):
        remote.answers[instance_path(f"single-{number}")] = answer(f"single-{number}")
        SingleVM(data={"hostname": f"single-{number}"}).save()
    listed = list(DataList(SingleVM))
    assert listed[0].info["status"] == "running"
    assert remote.count() == 1
    assert [obj.info["name"] for obj in listed[:3]] == [obj.hostname for obj in listed[:3]]
    assert remote.count() == 3


def test_a_remote_failure_serves_the_stale_data_with_its_error_and_the_next_access_retries(
        context: Context, remote: Remote, clock: Clock) -> None:
    created = vm(remote, status="running")
    guid, path = created.guid, instance_path(created.hostname)
    assert MirroredVM(guid).status == "running"
    refreshed_at = clock.time
    clock.time += TIMEOUT + 1
    remote.answers[path] = answer("x", status="stopped")
    remote.failures[path] = 503
    failing = MirroredVM(guid)
    assert failing.status == "running", "the last data is served, no exception"
    assert "503" in (failing.error or "") and failing.cached_at == refreshed_at and failing.stale
    assert context.stats["mirror.mirroredvm.failures"] == 1
    with pytest.raises(MirrorError, match="503") as raised:
        failing.refresh_info()
    assert isinstance(raised.value.__cause__, RemoteError)
    assert remote.count(path) == 3
    del remote.failures[path]
    retried = MirroredVM(guid)
    assert retried.status == "stopped"
    assert (retried.error, retried.cached_at) == (None, clock.time)
    assert remote.count(path) == 4


def test_a_status_change_with_an_unchanged_mtime_is_stored(context: Context, remote: Remote,
                                                           clock: Clock) -> None:
    obj = vm(remote, status="running")
    path = instance_path(obj.hostname)
    assert MirroredVM(obj.guid).mtime == 1.0
    clock.time += TIMEOUT
    remote.answers[path] = answer(obj.hostname, status="stopped", mtime=1.0)
    assert MirroredVM(obj.guid).status == "stopped"
    before = MirroredVM(obj.guid)
    assert before.info["status"] == "stopped", "the answer itself was stored, not only its parsed status"
    info, cached_at, revision = before.info, before.cached_at, before._revision
    clock.time += TIMEOUT
    remote.answers[path] = dict(reversed(list(remote.answers[path].items())))  # the same, in another order
    after = MirroredVM(obj.guid)
    assert after.info == info and list(after.info) == list(info), "info itself was not rewritten"
    assert after.cached_at == clock.time > cached_at, "an unchanged answer only advances cached_at"
    assert after._revision != revision and remote.count(path) == 3


def test_the_mirror_is_checked_when_the_class_is_created(context: Context) -> None:
    for every in (600, 900):
        with pytest.raises(ConfigurationError, match="refresh_every must be smaller than timeout"):
            Mirror(timeout=600, refresh_every=every)
    with pytest.raises(ConfigurationError, match="_refresh"):
        class NoLoader(DataObject):
            __properties = [Property("name", str)]
            __mirror = Mirror(timeout=60)
    with pytest.raises(ConfigurationError, match="rename info"):
        class Clashing(DataObject):
            __properties = [Property("info", str)]
            __mirror = Mirror(timeout=60)

            def _refresh(self) -> Any:
                return {}
    obj = MirroredVM(data={"hostname": "h"})
    for name in ("info", "cached_at", "error"):
        with pytest.raises(ReadOnlyFieldError, match="written only by refreshes"):
            setattr(obj, name, None)
    with pytest.raises(ReadOnlyFieldError):
        MirroredVM(data={"hostname": "h", "cached_at": 1.0})


@pytest.mark.parametrize("name", sorted(MIRROR_NAMES))
def test_a_field_named_like_one_of_the_mirrors_is_refused(name: str) -> None:
    # each reserved name on its own (a check of only some of them would let the others shadow
    # the mirror's field or method), declared by the mirrored class and inherited from a parent
    # that was not mirrored: the two ways a class comes by a field

    def refused() -> Any:
        if hasattr(DataObject, name):  # stale, refresh_info: every object's, so no hybrid's field
            return pytest.raises(InvalidValueError, match=f"'{name}' is reserved by DataObject")
        return pytest.raises(ConfigurationError, match=f"rename {name}$")

    with refused():
        class Clashing(DataObject, hybrid_name=f"clashing{uuid.uuid4().hex[:10]}"):
            __properties = [Property(name, str)]
            __mirror = Mirror(timeout=60)

            def _refresh(self) -> Any:
                return {}

    if hasattr(DataObject, name):
        return  # the unmirrored parent below is refused that name already

    class Unmirrored(DataObject, hybrid_name=f"unmirrored{uuid.uuid4().hex[:10]}"):
        __properties = [Property(name, str)]

    with refused():
        class MirroredChild(Unmirrored, hybrid_name=f"mirroredchild{uuid.uuid4().hex[:10]}"):
            __mirror = Mirror(timeout=60)

            def _refresh(self) -> Any:
                return {}

    class Mirrored(DataObject, hybrid_name=f"mirrored{uuid.uuid4().hex[:10]}"):
        __properties = [Property("hostname", str)]
        __mirror = Mirror(timeout=60)

        def _refresh(self) -> Any:
            return {}

    # the third way: a subclass of a mirrored class declares it (the mirror is inherited)
    with pytest.raises((ConfigurationError, InvalidValueError), match=name):
        class ChildOfMirrored(Mirrored, hybrid_name=f"childofmirrored{uuid.uuid4().hex[:10]}"):
            __properties = [Property(name, str)]


def test_frozen_serves_stored_data_without_a_call(context: Context, remote: Remote, clock: Clock) -> None:
    obj = MirroredVM(vm(remote).guid)
    with dal.mirror.frozen():
        assert (obj.status, obj.info) == (None, None)
        with pytest.raises(MirrorError, match="frozen"):
            obj.refresh_info()
        with pytest.raises(MirrorError, match="frozen"):
            dal.mirror.refresh_stale(MirroredVM)
    assert remote.count() == 0
    assert obj.status == "running", "after the block, the first read refreshes"
    assert remote.count() == 1


def test_ignore_cache_refreshes_every_new_instance(context: Context, remote: Remote, clock: Clock) -> None:
    obj = vm(remote)
    obj.ignore_cache = True
    obj.save()
    for calls in (1, 2, 3):
        assert MirroredVM(obj.guid).status == "running"
        assert remote.count() == calls
    obj = MirroredVM(obj.guid)
    obj.ignore_cache = False
    obj.save()
    assert obj.stale is False, "cleared: fresh again, as refreshed a moment ago"
    assert MirroredVM(obj.guid).status == "running" and remote.count() == 3


def test_a_parsed_property_is_queryable_through_its_index_right_after_the_refresh(
        context: Context, remote: Remote, clock: Clock) -> None:
    obj = vm(remote, status="paused")
    query = {"items": [("status", "EQUALS", "paused")]}
    assert len(DataList(MirroredVM, query)) == 0  # cached as a result: the refresh must invalidate it
    assert MirroredVM(obj.guid).status == "paused"
    found = DataList(MirroredVM, query)
    assert found.guids == [obj.guid]
    assert "index lookup on MirroredVM: status EQUALS 'paused' -> 1" in str(found.explain())


def test_relations_and_unparsed_properties_survive_refreshes(context: Context, remote: Remote,
                                                             clock: Clock) -> None:
    cluster = MirrorCluster(data={"name": f"c-{uuid.uuid4().hex[:6]}"})
    cluster.save()
    obj = vm(remote, status="running", note="kept", cluster=cluster)
    grant = VMGrant(data={"user": "alice", "vm": obj})
    grant.save()
    with dal.mirror.frozen():  # reading obj.hostname would refresh obj with the old answer
        hostname = obj.hostname
    remote.answers[instance_path(hostname)] = answer(hostname, status="stopped", memory=2048)
    local = MirroredVM(obj.guid)
    local.note = "changed here, not saved yet"
    local.status = "changed here too"
    assert local.ram == 2048 and local.note == "changed here, not saved yet"
    assert local.status == "stopped", "the remote wins for the properties it answered"
    local.save()
    again = MirroredVM(obj.guid)
    assert (again.status, again.note, again.cluster_guid) == ("stopped", "changed here, not saved yet",
                                                              cluster.guid)
    assert again.grants.guids == [grant.guid] and VMGrant(grant.guid).vm_guid == obj.guid
    assert [member.guid for member in cluster.vms] == [obj.guid]


def test_a_refresh_the_store_refuses_is_a_recorded_failure(context: Context, remote: Remote,
                                                          clock: Clock) -> None:
    cases = {"unknown": ({"nonsense": 1}, MirrorError, "not a property"),
             "mirror-field": ({"cached_at": 1.0}, MirrorError, "not a property"),
             "bad-value": ({"ram": "lots"}, InvalidValueError, "ram")}
    for name, (parsed, error, text) in cases.items():
        hostname = f"{name}-{uuid.uuid4().hex[:6]}"
        remote.answers[instance_path(hostname)] = {"parsed": parsed}
        obj = BadParseVM(data={"hostname": hostname})
        obj.save()
        assert BadParseVM(obj.guid).ram is None  # a read never raises
        stored = BadParseVM(obj.guid)
        assert text in (stored.error or "") and stored.info is None and stored.stale
        with pytest.raises(MirrorError) as raised:
            stored.refresh_info()
        assert isinstance(raised.value.__cause__, error)


def test_an_object_deleted_meanwhile_is_not_brought_back(context: Context, remote: Remote,
                                                         clock: Clock) -> None:
    obj = vm(remote)
    held = MirroredVM(obj.guid)
    MirroredVM(obj.guid).delete()
    assert held.status is None, "served as held; nothing written, no remote call"
    with pytest.raises(ObjectNotFoundError):
        MirroredVM(obj.guid)
    with pytest.raises(ObjectNotFoundError):
        held.refresh_info()
    with pytest.raises(MirrorError, match="not stored yet"):
        MirroredVM(data={"hostname": "other"}).refresh_info()
    assert remote.count() == 0


def during_the_remote_call(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Make ``change(guid)`` run, in another thread (another caller), while a refresh's remote call runs:
    after the refresh read the stored document, before it writes what the remote answered."""
    asked = MirroredVM._refresh

    def refresh(self: MirroredVM) -> Any:
        failed: list[BaseException] = []

        def run() -> None:
            try:
                change(self.guid)
            except BaseException as exc:  # handed to the test's thread: a thread's error is lost
                failed.append(exc)

        other = threading.Thread(target=run)
        other.start()
        other.join(30)
        assert not other.is_alive() and not failed, f"the concurrent change did not happen: {failed}"
        return asked(self)

    monkeypatch.setattr(MirroredVM, "_refresh", refresh)


def test_an_object_deleted_while_the_remote_call_runs_stays_deleted(
        context: Context, remote: Remote, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # the refresh already read the document (revision r) when the delete lands: only its commit's
    # check of r can tell the document is gone, else the write stores the object again
    obj = vm(remote)
    held = MirroredVM(obj.guid)
    during_the_remote_call(monkeypatch, lambda guid: MirroredVM(guid).delete())
    status = held.status  # the first read refreshes
    assert remote.count() == 1, "the remote call ran (and the delete with it)"
    with pytest.raises(ObjectNotFoundError):
        MirroredVM(obj.guid)
    assert status is None, "served as held: the remote's answer is not stored"


def test_a_change_saved_while_the_remote_call_runs_survives_the_refresh(
        context: Context, remote: Remote, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # another caller saves an unparsed property after the refresh read the document: the refresh's
    # write must not put back the value it read (its commit checks the revision, then merges)
    obj = vm(remote, note="before")
    held = MirroredVM(obj.guid)

    def save_a_note(guid: str) -> None:
        other = MirroredVM(guid)
        with dal.mirror.frozen():  # this caller does not refresh: only its note changes
            other.note = "saved meanwhile"
            other.save()

    during_the_remote_call(monkeypatch, save_a_note)
    assert held.status == "running"
    assert remote.count() == 1
    again = MirroredVM(obj.guid)
    with dal.mirror.frozen():
        assert (again.note, again.status) == ("saved meanwhile", "running")
