"""Mirrored hybrids: what a refresh re-syncs, refuses and counts, and how far ``dal refresh`` looks ahead.

Every test runs on the embedded default (SQLite + process memory) and on etcd + memcached; the
remote is the loopback HTTP server of :mod:`dal.testing.remote`, time the fake mirror clock.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import uuid
from typing import Any

import pytest
from mirror_hybrids import REMOTE_ENV, TIMEOUT, Clock, MirroredVM, answer, instance_path

import dal
import dal.cli.refresh as cli
import dal.mirror
import dal.mirror.refresh as refresh_module
import dal.mirror.store as store_module
from dal import DataList, DataObject, Mirror, Property
from dal.config import Context
from dal.exceptions import BackendError, ConfigurationError, DalError, RaceConditionError
from dal.testing.remote import Remote, get_json

#: MirroredVM's refresh_every
EVERY = 300.0


class MandatoryBox(DataObject):
    """A mirrored hybrid whose parser may return None for a mandatory property."""

    __properties = [Property("name", str, unique=True), Property("state", str),
                    Property("owner", str, mandatory=False)]
    __mirror = Mirror(timeout=TIMEOUT)

    def _refresh(self) -> Any:
        return {"state": None}

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return {"state": info["state"]}


def stored_vm(remote: Remote) -> MirroredVM:
    hostname = f"fix-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname, status="running", memory=512)
    obj = MirroredVM(data={"hostname": hostname})
    obj.save()
    return obj


def running(guid: str) -> bool:
    return guid in {obj.guid for obj in DataList(MirroredVM, {"items": [("status", "EQUALS", "running")]})}


def test_an_unchanged_answer_writes_back_a_parsed_property_changed_locally(context: Context, remote: Remote,
                                                                           clock: Clock) -> None:
    obj = stored_vm(remote)
    local = MirroredVM(obj.guid)
    assert local.status == "running"  # the first read refreshed it
    local.status = "stopped"
    local.save()
    assert not running(obj.guid)
    clock.time += TIMEOUT
    again = MirroredVM(obj.guid)
    again.refresh_info()  # the remote still answers the same: the answer's digest did not move
    assert again.status == "running" and MirroredVM(obj.guid).status == "running"
    assert running(obj.guid), "queries and indexes see the parsed value again"
    assert context.stats["mirror.mirroredvm.unchanged"] == 1


def test_an_unchanged_answer_fills_a_property_a_newer_parser_returns(context: Context, remote: Remote,
                                                                    clock: Clock,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    full = MirroredVM.__dict__["parse_persistent_info"]
    monkeypatch.setattr(MirroredVM, "parse_persistent_info",
                        classmethod(lambda cls, info: {"status": info["status"]}))  # the app's version 1
    obj = stored_vm(remote)
    assert MirroredVM(obj.guid).ram is None
    monkeypatch.setattr(MirroredVM, "parse_persistent_info", full)  # version 2 parses ram as well
    clock.time += TIMEOUT
    report = dal.mirror.refresh_stale(MirroredVM)
    assert (report.total, report.refreshed, report.unchanged) == (1, 0, 1)
    with dal.mirror.frozen():
        assert MirroredVM(obj.guid).ram == 512


def test_a_refresh_refuses_none_for_a_mandatory_property(context: Context, clock: Clock) -> None:
    box = MandatoryBox(data={"name": f"box-{uuid.uuid4().hex[:8]}", "state": "up"})
    box.save()
    read = MandatoryBox(box.guid)
    assert read.state == "up", "nothing of the answer is stored"
    assert read.error is not None and read.error.startswith("InvalidValueError") and "mandatory" in read.error
    assert read.stale and context.stats["mirror_failures"] == 1
    read.owner = "alice"
    read.save()  # an unrelated save still works: state was never emptied
    with dal.mirror.frozen():
        assert MandatoryBox(box.guid).owner == "alice"


def test_a_store_failure_during_a_lazy_refresh_is_counted_once(context: Context, remote: Remote, clock: Clock,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    obj = stored_vm(remote)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise BackendError("disk gone")

    monkeypatch.setattr(context, "commit", broken)
    assert MirroredVM(obj.guid).status is None  # a read serves what it holds
    assert context.stats["mirror.mirroredvm.failures"] == 1
    assert context.stats["mirror_failures"] == 0, "a store failure is no remote nor answer failure"
    with pytest.raises(BackendError, match="disk gone"):
        MirroredVM(obj.guid).refresh_info()
    with pytest.raises(BackendError, match="disk gone"):  # the bulk refresher reports it for the hybrid
        dal.mirror.refresh_stale(MirroredVM)
    assert context.stats["mirror_failures"] == 0


def test_an_object_that_keeps_changing_fails_alone_in_a_bulk_refresh(context: Context, remote: Remote,
                                                                     clock: Clock,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """RaceConditionError is about one object (its document kept changing), not the store: the other
    objects of the pass are stored, and that one is reported failed."""
    objects = [stored_vm(remote) for _ in range(3)]
    real, hot = refresh_module.store_answer, objects[0].guid

    def racing(context: Context, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if obj.guid == hot:
            raise RaceConditionError(f"MirroredVM {obj.guid} kept changing while its refresh was stored")
        return real(context, obj, *args, **kwargs)

    monkeypatch.setattr(refresh_module, "store_answer", racing)
    real_failure = refresh_module.store_failure

    def still_racing(context: Context, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if obj.guid == hot:  # recording its failure meets the same contention
            raise RaceConditionError(f"MirroredVM {obj.guid} kept changing while its failure was stored")
        return real_failure(context, obj, *args, **kwargs)

    monkeypatch.setattr(refresh_module, "store_failure", still_racing)
    report = dal.mirror.refresh_stale(MirroredVM)
    assert report.refreshed + report.unchanged == 2 and list(report.failed) == [hot]
    assert "RaceConditionError" in report.failed[hot]
    assert dal.mirror.stale_count(MirroredVM) == 1


def passes(context: Context, ahead: float, start: float, clock: Clock, count: int) -> list[int]:
    """Run ``count`` passes of the refresher ``EVERY`` fake seconds apart from ``start``; return how many
    objects were stale just before each following pass."""
    leader = cli.Leader(context.persistent, f"refresher/{context.namespace}", TIMEOUT)
    assert leader.acquire().acquired
    seen = []
    try:
        for number in range(count):
            clock.time = start + number * EVERY
            outcome = cli.refresh_pass([MirroredVM], 100, leader, threading.Event(), {MirroredVM: ahead})
            assert not outcome.failed and not outcome.interrupted
            clock.time += EVERY - 1
            seen.append(dal.mirror.stale_count(MirroredVM))
    finally:
        leader.release()
    return seen


def test_the_loop_refreshes_what_would_go_stale_before_its_next_pass(context: Context, remote: Remote,
                                                                     clock: Clock) -> None:
    start = clock.time
    for number in range(3):  # readers refreshed these lazily between two passes, 10 s apart
        clock.time = start + 10 * number
        stored_vm(remote).refresh_info()
    ahead = cli.look_ahead(EVERY, 0.0)
    assert EVERY < ahead < TIMEOUT
    # without looking ahead, each is 10-30 s short of stale at one pass and stale long before the next
    assert passes(context, ahead, start + 50, clock, 4) == [0, 0, 0, 0]
    assert cli.look_ahead(EVERY, 12.5) == ahead + 12.5, "a slow pass looks further ahead"


def test_look_ahead_is_checked(context: Context, clock: Clock) -> None:
    for wrong in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ConfigurationError, match="look-ahead"):
            dal.mirror.refresh_stale(MirroredVM, ahead=wrong)


@pytest.mark.parametrize(("once", "given", "expected"),
                         [(True, None, 0.0), (True, 42.0, 42.0),
                          (False, None, cli.look_ahead(EVERY, 0.0)), (False, 7.0, 7.0)])
def test_the_loop_looks_ahead_and_once_does_not_unless_told(context: Context, monkeypatch: pytest.MonkeyPatch,
                                                            once: bool, given: float | None,
                                                            expected: float) -> None:
    stop = threading.Event()
    asked: list[dict[Any, float]] = []

    def recording(hybrids: Any, batch_size: int, leader: Any, stopped: Any, ahead: Any = None) -> cli.Outcome:
        asked.append(dict(ahead))
        stop.set()
        return cli.Outcome()

    monkeypatch.setattr(cli, "refresh_pass", recording)
    leader = cli.Leader(context.persistent, f"refresher/{context.namespace}", TIMEOUT)
    args = argparse.Namespace(batch_size=100, limit=10, look_ahead=given)
    (cli._once if once else cli._loop)([MirroredVM], leader, stop, args)
    assert asked == [{MirroredVM: expected}]


@pytest.mark.parametrize("wrong", [-1.0, float("nan"), float("inf")])
def test_a_wrong_look_ahead_is_bad_input(wrong: float) -> None:
    args = argparse.Namespace(batch_size=100, limit=10, look_ahead=wrong)
    with pytest.raises(DalError, match="--look-ahead must be a finite number"):
        cli.run(args)


# --- a Mirror declared where dal did not read it, loaders that are not classmethods ---------------


class RemoteBase(DataObject, abstract=True):
    """An abstract base declaring the mirror and its loader: the hybrids deriving from it are mirrored."""

    __properties = [Property("hostname", str, unique=True), Property("status", str, mandatory=False)]
    __mirror = Mirror(timeout=TIMEOUT, refresh_every=300)

    def _refresh(self) -> Any:
        return get_json(os.environ[REMOTE_ENV] + instance_path(self.hostname))

    @classmethod
    def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
        return {"status": info["status"]}


class MiddleBase(RemoteBase, abstract=True):
    """An abstract base between: it passes the mirror on."""


class AbstractMirroredVM(MiddleBase):
    """Mirrored through its abstract bases, as if it declared ``__mirror`` itself."""


def test_a_hybrid_deriving_from_an_abstract_base_with_a_mirror_is_mirrored(context: Context, remote: Remote,
                                                                          clock: Clock) -> None:
    mirror = AbstractMirroredVM._meta.mirror
    assert mirror is not None and (mirror.timeout, mirror.refresh_every) == (TIMEOUT, 300)
    assert AbstractMirroredVM in dal.mirror.mirrored_hybrids()
    assert set(AbstractMirroredVM._meta.fields()) == {"hostname", "status", "info", "cached_at", "error",
                                                      "ignore_cache"}
    hostname = f"abs-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname, status="running")
    obj = AbstractMirroredVM(data={"hostname": hostname})
    obj.save()
    read = AbstractMirroredVM(obj.guid)
    assert read.status == "running" and read.info["name"] == hostname and remote.count() == 1
    assert not read.stale and dal.mirror.stale_count(AbstractMirroredVM) == 0


@pytest.mark.parametrize("where", ["mirror", "_mirror", "__mirrors", "mixin"])
def test_a_mirror_under_a_name_dal_does_not_read_is_refused(where: str) -> None:
    namespace: dict[str, Any] = {"_Misplaced__properties": [Property("hostname", str)],
                                 "_refresh": lambda self: {}}
    bases: tuple[type, ...] = (DataObject,)
    if where == "mixin":
        bases = (type("Mixin", (), {"_Mixin__mirror": Mirror(timeout=60)}), DataObject)
        shown, fix = "Mixin.__mirror", "make Mixin a DataObject with abstract=True"
    else:
        namespace[where.replace("__", "_Misplaced__")] = Mirror(timeout=60)
        shown, fix = where, "name it `__mirror` in Misplaced"
    refused = re.escape(f"`{shown}` holds a Mirror") + ".*" + re.escape(fix)
    with pytest.raises(ConfigurationError, match=refused):
        type("Misplaced", bases, namespace, hybrid_name=f"misplaced{uuid.uuid4().hex[:10]}")


class _PlainLoaders:
    """A mixin whose loaders lack ``@classmethod``: a mirrored hybrid inheriting them is refused too."""

    def _refresh_many(self, objects: list[Any]) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("loader", ["_refresh_many", "parse_persistent_info", "inherited"])
def test_a_bulk_loader_or_parser_that_is_not_a_classmethod_is_refused(loader: str) -> None:
    def plain(self: Any, argument: Any) -> dict[str, Any]:
        return {}

    def body(name: str, loaders: Any) -> dict[str, Any]:
        return {f"_{name}__properties": [Property("hostname", str)], f"_{name}__mirror": Mirror(timeout=60),
                "_refresh": lambda self: {}, **loaders}

    bases: tuple[type, ...] = (_PlainLoaders, DataObject) if loader == "inherited" else (DataObject,)
    loaders = {} if loader == "inherited" else {loader: plain}
    name = "_refresh_many (from _PlainLoaders)" if loader == "inherited" else loader
    with pytest.raises(ConfigurationError, match=re.escape(f"Plain.{name} must be a classmethod")):
        type("Plain", bases, body("Plain", loaders), hybrid_name=f"plain{uuid.uuid4().hex[:10]}")
    with pytest.raises(ConfigurationError, match="must be a classmethod"):  # an abstract base is checked too
        type("PlainBase", bases, body("PlainBase", loaders), abstract=True)
    for wrapped in (classmethod(plain), staticmethod(lambda argument: {})):
        fine = body("Plain", {"_refresh_many": wrapped, "parse_persistent_info": wrapped})
        created = type("Plain", (DataObject,), fine, hybrid_name=f"plain{uuid.uuid4().hex[:10]}")
        assert created._meta.mirror is not None


# --- refresh_stale checks its arguments before the first batch -----------------------------------


def test_refresh_stale_checks_progress_before_asking_the_remote(context: Context, remote: Remote,
                                                               clock: Clock) -> None:
    objects = [stored_vm_unread(remote) for _ in range(3)]
    with pytest.raises(ConfigurationError, match="progress must be None or a callable"):
        dal.mirror.refresh_stale(MirroredVM, batch_size=1, progress="x")  # type: ignore[arg-type]
    assert remote.count() == 0 and dal.mirror.stale_count(MirroredVM) == 3, "nothing was refreshed"
    done: list[int] = []
    report = dal.mirror.refresh_stale(MirroredVM, batch_size=2, progress=done.append, guids=objects)
    assert (report.total, report.refreshed, done) == (3, 3, [2, 3])


def test_refresh_stale_refuses_a_guid_that_is_not_one_before_asking_the_remote(context: Context,
                                                                               remote: Remote,
                                                                               clock: Clock) -> None:
    objects = [stored_vm_unread(remote) for _ in range(2)]
    for wrong in ("nope", f" {objects[0]}", f"{{{objects[0]}}}", 7):
        with pytest.raises(ConfigurationError, match="must be a guid"):
            dal.mirror.refresh_stale(MirroredVM, guids=[objects[1], wrong])  # type: ignore[list-item]
    assert remote.count() == 0 and dal.mirror.stale_count(MirroredVM) == 2, "nothing was refreshed"


def stored_vm_unread(remote: Remote) -> str:
    """Return the guid of a saved MirroredVM never refreshed (so stale), without reading it."""
    hostname = f"chk-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname, status="running")
    obj = MirroredVM(data={"hostname": hostname})
    obj.save()
    return obj.guid


# --- a refresh superseded only by an answer stored since it read the object, whatever the clocks ---


def test_a_newer_answer_is_stored_when_another_machines_clock_is_ahead(context: Context, remote: Remote,
                                                                      clock: Clock) -> None:
    guid = stored_vm_unread(remote)
    hostname = MirroredVM(guid).hostname  # read on machine A, whose clock is 30 s ahead: it refreshes
    ahead = clock.time
    with dal.mirror.frozen():
        assert MirroredVM(guid).cached_at == ahead
    remote.answers[instance_path(hostname)] = answer(hostname, status="stopped")  # a job finished
    clock.time = ahead - 29  # machine B, 1 s later in real time, its clock 30 s behind A's
    on_b = MirroredVM(guid)
    on_b.refresh_info()
    assert (on_b.status, on_b.info["status"], on_b.error, on_b.cached_at) == ("stopped", "stopped", None,
                                                                             ahead - 29)
    with dal.mirror.frozen():
        assert MirroredVM(guid).status == "stopped", "the newer answer is stored, not thrown away"
    assert remote.count() == 2 and context.stats["mirror.mirroredvm.refreshed"] == 2


def test_a_slow_answer_never_replaces_one_stored_meanwhile_by_a_machine_whose_clock_is_behind(
        context: Context, remote: Remote, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    guid = stored_vm_unread(remote)
    with dal.mirror.frozen():
        hostname = MirroredVM(guid).hostname
    path = instance_path(hostname)
    asked = MirroredVM._refresh
    slow: list[float] = []

    def answering(self: MirroredVM) -> Any:
        found = asked(self)  # "running", on its way back slowly
        if not slow:
            slow.append(clock.time)
            remote.answers[path] = answer(hostname, status="stopped")  # the remote changes
            clock.time -= 60  # another machine, whose clock is behind, asks after this one and stores first
            with dal.mirror.frozen():
                result = refresh_module._refresh_owned(context, [MirroredVM(guid)], True, None, 0.0)
            assert result[guid].outcome == refresh_module.REFRESHED
            clock.time = slow[0]
        return found

    monkeypatch.setattr(MirroredVM, "_refresh", answering)
    late = MirroredVM(guid)
    assert late.status == "stopped", "the older answer, landing last, is neither stored nor served"
    assert late.cached_at == slow[0] - 60


#: what the remote answers for each SerialBox, by name
SERIALS: dict[str, str] = {}


def serial_box(unique: bool) -> Any:
    class SerialBox(DataObject, hybrid_name="fxserialbox"):
        __properties = [Property("name", str), Property("serial", str, unique=unique, mandatory=False)]
        __mirror = Mirror(timeout=TIMEOUT)

        def _refresh(self) -> Any:
            return {"serial": SERIALS[self.name]}

        @classmethod
        def parse_persistent_info(cls, info: dict[str, Any]) -> dict[str, Any]:
            return {"serial": info["serial"]}
    return SerialBox


def test_a_refresh_giving_up_a_unique_value_leaves_the_key_another_holder_took(context: Context,
                                                                             clock: Clock) -> None:
    """While serial's unique keys are not built (it became unique after two boxes stored X), a refresh
    that moves one of them off X deletes X's key only if it names that box, as a save does."""
    old = serial_box(False)
    SERIALS.update(a="X", b="X", c="X")
    a, b = old(data={"name": "a"}), old(data={"name": "b"})
    dal.save_many([a, b])
    assert old(a.guid).serial == old(b.guid).serial == "X"  # the first reads refreshed them
    new = serial_box(True)
    c = new(data={"name": "c", "serial": "X"})
    c.save()  # nothing keys X yet: c takes it
    x_key = context.keys.unique("fxserialbox", "serial", "X")
    assert context.persistent.get(x_key).value == c.guid.encode()  # type: ignore[union-attr]
    SERIALS["b"] = "Y"
    clock.time += TIMEOUT
    new(b.guid).refresh_info()
    assert new(b.guid).serial == "Y"
    assert context.persistent.get(x_key).value == c.guid.encode()  # type: ignore[union-attr]


def test_a_refresh_whose_given_up_unique_key_changed_owner_meanwhile_plans_again(
        context: Context, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the owner read and the commit, the holder of X's key moves off X (deleting it): only the
    owner check fails, and the refresh plans again and stores its answer, as a save does (it took the
    failure for a deletion of the object before)."""
    old = serial_box(False)
    SERIALS.update(a="X", b="X", c="X")
    a, b = old(data={"name": "a"}), old(data={"name": "b"})
    dal.save_many([a, b])
    assert old(a.guid).serial == old(b.guid).serial == "X"
    new = serial_box(True)
    c = new(data={"name": "c", "serial": "X"})
    c.save()
    real = store_module.unique_owners
    moved: list[bool] = []

    def racing(*args: Any) -> Any:
        owners = real(*args)
        if not moved:
            moved.append(True)
            SERIALS["c"] = "Z"
            holder = new(c.guid)
            holder.serial = "Z"
            holder.save()  # c holds X's key: its save deletes it
        return owners

    monkeypatch.setattr(store_module, "unique_owners", racing)
    SERIALS["b"] = "Y"
    clock.time += TIMEOUT
    new(b.guid).refresh_info()
    assert moved and new(b.guid).serial == "Y"
