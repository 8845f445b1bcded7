"""Mirrored hybrids: a refresh racing a save or another refresh, and a unique value the remote moves.

Every test runs on each store pair (SQLite + memory, etcd + memcached, Redis + Redis); the remote
is the loopback HTTP server of :mod:`dal.testing.remote`, time the fake mirror clock.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from mirror_hybrids import REMOTE_ENV, TIMEOUT, Clock, MirroredVM, answer, instance_path

import dal.mirror
import dal.mirror.refresh as refresh_module
from dal import DataObject, Mirror, Property
from dal.config import Context, current
from dal.exceptions import ConcurrencyError, MirrorError
from dal.testing.remote import Remote, get_json


class UniqueIPVM(DataObject):
    """A mirrored hybrid whose parsed ``ip`` is unique: the remote may move an address between objects."""

    __properties = [Property("hostname", str, unique=True), Property("ip", str, mandatory=False, unique=True)]
    __mirror = Mirror(timeout=TIMEOUT)

    def _refresh(self) -> Any:
        return get_json(os.environ[REMOTE_ENV] + instance_path(self.hostname))

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return {"ip": info["ip"]}


def stored_vm(remote: Remote) -> tuple[str, str]:
    """The guid and hostname of a saved MirroredVM never refreshed (so stale), which the remote says is
    running (returned rather than the object: reading its hostname would refresh it)."""
    hostname = f"race-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname, status="running")
    obj = MirroredVM(data={"hostname": hostname})
    obj.save()
    return obj.guid, hostname


def stored(guid: str) -> dict[str, Any]:
    """What is stored of a MirroredVM, read without refreshing it."""
    with dal.mirror.frozen():
        obj = MirroredVM(guid)
        return {"note": obj.note, "status": obj.status, "info": obj.info, "error": obj.error,
                "cached_at": obj.cached_at, "stale": obj.stale}


@pytest.mark.parametrize("datastore_wins", [False, True, None])
def test_a_refresh_between_an_assignment_and_save_keeps_a_concurrent_write_seen(
        context: Context, remote: Remote, clock: Clock, datastore_wins: bool | None) -> None:
    guid, hostname = stored_vm(remote)
    mine = MirroredVM(guid)
    mine.note = "mine"  # an assignment, not a read: no refresh yet
    with dal.mirror.frozen():
        theirs = MirroredVM(guid)
        theirs.note = "theirs"  # another writer saves the same field
        theirs.save()
    remote.answers[instance_path(hostname)] = answer(hostname, status="stopped")
    assert mine.status == "stopped"  # the first read refreshed it, over the other writer's document
    assert mine.note == "mine", "the unsaved change survives the refresh"
    if datastore_wins is None:
        with pytest.raises(ConcurrencyError, match="note changed both here and in the store"):
            mine.save(datastore_wins=None)
    else:
        mine.save(datastore_wins=datastore_wins)
    # as for an instance that was never refreshed: ours wins with False, theirs with True, None raises
    assert stored(guid)["note"] == ("mine" if datastore_wins is False else "theirs")
    assert stored(guid)["status"] == "stopped"


def test_a_refresh_after_an_assignment_alone_makes_no_conflict(context: Context, remote: Remote,
                                                               clock: Clock) -> None:
    guid, _ = stored_vm(remote)
    mine = MirroredVM(guid)
    mine.note = "mine"
    assert mine.status == "running"  # refreshed: info, cached_at and status written meanwhile
    mine.save(datastore_wins=None)  # the refresh's fields are not this save's: nothing conflicts
    assert not mine.updated_on_datastore()
    assert (stored(guid)["note"], stored(guid)["status"]) == ("mine", "running")


@pytest.mark.parametrize("fails", [False, True], ids=["answer", "failure"])
def test_a_slow_answer_never_replaces_one_asked_for_later(context: Context, remote: Remote, clock: Clock,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         fails: bool) -> None:
    guid, hostname = stored_vm(remote)
    path = instance_path(hostname)
    asked = MirroredVM._refresh
    slow: list[MirroredVM] = []

    def answering(self: MirroredVM) -> Any:
        found = asked(self)  # "running", on its way back slowly
        if not slow:
            slow.append(self)
            remote.answers[path] = answer(hostname, status="stopped")  # the remote changes
            clock.time += 10
            # meanwhile another process (whose lock this one's outlived) asks and stores the newer answer;
            # frozen: its loader's read of the hostname must not wait for this refresh's lock
            with dal.mirror.frozen():
                result = refresh_module._refresh_owned(current(), [MirroredVM(guid)], True, None, 0.0)
            assert result[guid].outcome == refresh_module.REFRESHED
            if fails:
                raise RuntimeError("503 from the remote")
        return found

    monkeypatch.setattr(MirroredVM, "_refresh", answering)
    late = MirroredVM(guid)
    assert late.status == "stopped", "the older answer, landing last, is not stored nor served"
    assert late.error is None and late.cached_at == clock.time
    again = stored(guid)
    assert (again["status"], again["info"]["status"], again["error"], again["cached_at"], again["stale"]) == (
        "stopped", "stopped", None, clock.time, False)


def test_a_refresh_that_finds_a_later_answer_stored_reports_it_as_stored_elsewhere(
        context: Context, remote: Remote, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    guid, hostname = stored_vm(remote)
    entry = current().load_document("mirroredvm", guid)  # what this refresh read before asking the remote
    assert entry is not None
    MirroredVM(guid).refresh_info()  # meanwhile another refresh asks and stores its answer
    monkeypatch.setattr(clock, "time", clock.time - 5)  # this refresh asked 5 s before the stored one
    late = MirroredVM(guid)
    result = refresh_module._store(current(), late, entry, answer(hostname, status="old"), clock.time,
                                   "_refresh")
    assert result.outcome == refresh_module.ELSEWHERE
    assert stored(guid)["status"] == "running" and stored(guid)["cached_at"] == clock.time + 5


def test_a_unique_value_the_remote_swapped_says_what_is_true_and_how_to_clear_it(
        context: Context, remote: Remote, clock: Clock) -> None:
    names = [f"swap-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    ips = [f"10.{uuid.uuid4().int % 250}.0.{number}" for number in (1, 2)]
    objs = []
    for name, ip in zip(names, ips, strict=True):
        remote.answers[instance_path(name)] = {"ip": ip}
        objs.append(UniqueIPVM(data={"hostname": name}))
        objs[-1].save()
        objs[-1].refresh_info()
    first, second = objs
    for name, ip in zip(names, reversed(ips), strict=True):
        remote.answers[instance_path(name)] = {"ip": ip}  # the remote swaps the two addresses
    clock.time += TIMEOUT
    with pytest.raises(MirrorError) as raised:
        UniqueIPVM(first.guid).refresh_info()
    text = str(raised.value)
    assert f"the remote gives {ips[1]!r}, which another UniqueIPVM still holds" in text
    assert "choose another value" not in text
    with dal.mirror.frozen():
        assert UniqueIPVM(first.guid).error is not None and "swapped" in UniqueIPVM(first.guid).error
    # the remedy the message gives: this one saved with a value no other holds, the other refreshed, then it
    with dal.mirror.frozen():
        cleared = UniqueIPVM(first.guid)
        cleared.ip = None
        cleared.save()
    UniqueIPVM(second.guid).refresh_info()
    UniqueIPVM(first.guid).refresh_info()
    with dal.mirror.frozen():
        now = [(UniqueIPVM(obj.guid).ip, UniqueIPVM(obj.guid).error) for obj in objs]
    assert now == [(ips[1], None), (ips[0], None)]
