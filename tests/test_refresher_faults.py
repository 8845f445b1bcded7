"""Faults of the mirror's refreshes and of ``dal refresh`` that a bug hunt found, each fixed here.

A loader's error text no store can encode (a lone surrogate) or whose ``__str__`` raises; an
answer nested deeper than ``info`` holds; a refresh another caller made and that failed while the
bulk refresher waited for it; a lock taken over from a dead holder when the store then fails; a
client a rotation closed while it was handed out; a remote call that hangs with the refresher
leading; and the inputs ``refresh_stale`` and ``ClientCache`` refused badly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dal.mirror
import dal.mirror.refresh as refresh_module
from dal import DataList, DataObject, Mirror, Property
from dal.backends import open_persistent
from dal.cache import owners
from dal.clients import ClientCache
from dal.config import Context
from dal.exceptions import BackendError, ConfigurationError, MirrorError
from dal.mirror import flight
from dal.validators import MAX_DEPTH

#: what the loaders of FaultVm do, by hostname (a test sets it; the default answers)
BEHAVIOUR: dict[str, Callable[[], Any]] = {}
SURROGATE = b"502 from proxy \xff".decode("utf-8", "surrogateescape")


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class FaultVm(DataObject):
    """Refreshed one at a time; each hostname's loader does what BEHAVIOUR says."""

    __properties = [Property("hostname", str, unique=True)]
    __mirror = Mirror(timeout=60)

    def _refresh(self) -> Any:
        return BEHAVIOUR.get(self.hostname, lambda: {"name": self.hostname})()


def fail(error: BaseException) -> Callable[[], Any]:
    def loader() -> Any:
        raise error
    return loader


def saved(*hostnames: str) -> list[FaultVm]:
    objects = [FaultVm(data={"hostname": name}) for name in hostnames]
    for obj in objects:
        obj.save()
    return objects


@pytest.fixture(autouse=True)
def _behaviour() -> Any:
    yield
    BEHAVIOUR.clear()


# --- an error text no store takes never reaches a read, nor stops a pass ------------------------


@pytest.mark.parametrize("error", [ConnectionError(SURROGATE), BrokenStr()], ids=["surrogate", "broken-str"])
def test_an_unprintable_or_unencodable_error_is_stored_and_never_raised(context: Context,
                                                                        error: Exception) -> None:
    (obj,) = saved("odd")
    BEHAVIOUR["odd"] = fail(error)
    assert FaultVm(obj.guid).hostname == "odd"  # the read serves what it holds, and does not raise
    with dal.mirror.frozen():
        stored = FaultVm(obj.guid)
        assert stored.stale and stored.error is not None
        assert stored.error.startswith(type(error).__name__)
    if isinstance(error, ConnectionError):
        assert stored.error == "ConnectionError: 502 from proxy \\udcff"  # readable, and UTF-8
    else:
        assert stored.error == "BrokenStr: BrokenStr()"  # its repr, as its str raised
    assert context.stats["mirror_failures"] == 1


def test_an_unencodable_error_fails_one_object_and_the_pass_goes_on(context: Context) -> None:
    objects = saved("vm0", "vm1", "vm2", "vm3")
    BEHAVIOUR["vm1"] = fail(ConnectionError(SURROGATE))
    report = dal.mirror.refresh_stale(FaultVm, batch_size=2)
    assert (report.total, report.refreshed, report.unchanged) == (4, 3, 0)
    assert report.failed == {objects[1].guid: "ConnectionError: 502 from proxy \\udcff"}
    with dal.mirror.frozen():
        assert sorted(obj.hostname for obj in DataList(FaultVm) if obj.stale) == ["vm1"]


# --- an answer ``info`` cannot hold --------------------------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    """Return a dict holding dicts ``levels`` deep (itself the first)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


def test_an_answer_nested_deeper_than_info_holds_is_a_recorded_failure(context: Context) -> None:
    (obj,) = saved("deep")
    BEHAVIOUR["deep"] = lambda: nested(MAX_DEPTH + 50)
    with pytest.raises(MirrorError, match=f"nests lists and dicts more than {MAX_DEPTH} deep"):
        obj.refresh_info()
    with dal.mirror.frozen():
        stored = FaultVm(obj.guid)
        assert stored.info is None and stored.stale and stored.error is not None
        assert stored.error.startswith("InvalidValueError: FaultVm._refresh returned an answer that cannot "
                                       "be stored")
        assert stored.to_model().hostname == "deep"  # nothing of the answer stored: still a valid object
    assert context.stats["mirror_failures"] == 1
    BEHAVIOUR["deep"] = lambda: nested(MAX_DEPTH)  # as deep as an assignment takes: stored
    obj.refresh_info()
    with dal.mirror.frozen():
        stored = FaultVm(obj.guid)
        assert stored.error is None and stored.info == nested(MAX_DEPTH)
        assert stored.to_model().info == nested(MAX_DEPTH)
    BEHAVIOUR["deep"] = lambda: {"disks": (1, 2), "nics": {0: "eth0"}}  # its JSON form is stored, as before
    obj.refresh_info()
    with dal.mirror.frozen():
        assert FaultVm(obj.guid).info == {"disks": [1, 2], "nics": {"0": "eth0"}}


class DiskVm(DataObject, hybrid_name="faultdiskvm"):
    """A parser reading the answer as its loader returned it: int keys, a tuple."""

    __properties: list[Property[Any]] = [Property("hostname", str),
                                         Property("first_disk", int, mandatory=False),
                                         Property("kind", str, mandatory=False)]
    __mirror = Mirror(timeout=60)

    def _refresh(self) -> dict[Any, Any]:
        return {"disks": {0: {"size": 10240}}, "tags": ("web", "prod")}

    @classmethod
    def parse_persistent_info(cls, info: dict[Any, Any]) -> dict[str, Any]:
        return {"first_disk": info["disks"][0]["size"], "kind": type(info["tags"]).__name__}


def test_the_parser_reads_the_answer_as_the_loader_returned_it(context: Context) -> None:
    """info stores an answer's JSON form (str keys, lists), but the parser still gets the answer itself: a
    parser reading ``info["disks"][0]`` failed with KeyError once the stored form was handed to it."""
    obj = DiskVm(data={"hostname": "a"})
    obj.save()
    obj.refresh_info()
    with dal.mirror.frozen():
        stored = DiskVm(obj.guid)
        assert (stored.error, stored.first_disk, stored.kind) == (None, 10240, "tuple")
        assert stored.info == {"disks": {"0": {"size": 10240}}, "tags": ["web", "prod"]}


# --- a refresh made by another caller that failed ----------------------------------------------


def holder_failing(context: Context, hostname: str, calls: list[str]) -> threading.Thread:
    """Start a thread that refreshes ``hostname`` and fails once another caller waits for its lock."""
    entered = threading.Event()
    waits = f"mirror.{FaultVm._meta.name}.waits"

    def loader() -> Any:
        calls.append(threading.current_thread().name)
        if threading.current_thread().name != "holder":
            return {"name": hostname}
        entered.set()
        deadline = time.monotonic() + 30
        while context.stats[waits] < 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # until the other caller has found the lock held and waits for it
        raise ConnectionError("remote answered 503")

    BEHAVIOUR[hostname] = loader
    guid = next(obj.guid for obj in DataList(FaultVm) if obj._data["hostname"] == hostname)
    holder = threading.Thread(target=lambda: FaultVm(guid).hostname, name="holder")
    holder.start()
    assert entered.wait(30)
    return holder


def test_refresh_stale_refreshes_what_another_callers_failed_refresh_left_stale(context: Context) -> None:
    (obj,) = saved("a")
    calls: list[str] = []
    holder = holder_failing(context, "a", calls)
    report = dal.mirror.refresh_stale(FaultVm)
    holder.join(30)
    # not "unchanged": the bulk refresher asked the remote itself once the holder had failed
    assert (report.total, report.refreshed, report.unchanged, report.failed) == (1, 1, 0, {})
    assert calls == ["holder", "MainThread"]
    with dal.mirror.frozen():
        after = FaultVm(obj.guid)
        assert not after.stale and after.error is None
    assert dal.mirror.stale_count(FaultVm) == 0


def test_a_lazy_waiter_adopts_the_failure_without_calling_the_remote_again(context: Context) -> None:
    (obj,) = saved("b")
    calls: list[str] = []
    holder = holder_failing(context, "b", calls)
    waiter = FaultVm(obj.guid)
    waiter.__dict__["_mirror_checked"] = True
    results = refresh_module.refresh([waiter])
    holder.join(30)
    assert results[obj.guid] == refresh_module.Result(refresh_module.FAILED,
                                                      "ConnectionError: remote answered 503")
    assert calls == ["holder"]  # single flight still: one remote call for the two callers


def test_a_lock_taken_over_while_waiting_is_released_when_the_store_then_fails(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = [FaultVm(obj.guid) for obj in saved("p", "q")]
    cache = context.dynamics
    keys = [flight.lock_key(context, FaultVm._meta.name, obj.guid) for obj in objects]
    for key in keys:  # another caller holds both locks
        assert cache.store.add(key, cache.signer.seal(key, owners.token(b"L")), 60)
    real_wait, real_load = flight.wait, context.load_document

    def wait(context: Context, key: str, ttl: float, deadline: float) -> flight.Lock | None:
        if key == keys[0]:
            cache.store.delete(key)  # its holder died: this caller takes its lock over
            return real_wait(context, key, ttl, deadline)
        return None  # the holder of the second one is done

    def load(hybrid: str, guid: str) -> Any:
        if guid == objects[1].guid:
            raise BackendError("the durable store failed (injected)")
        return real_load(hybrid, guid)

    monkeypatch.setattr(flight, "wait", wait)
    monkeypatch.setattr(context, "load_document", load)
    with pytest.raises(BackendError, match="injected"):
        refresh_module.refresh(objects)
    # released (a done marker at most): the next caller of the first one takes it, rather than wait
    # lock_timeout (30 s) for a holder that is gone
    assert flight.acquire(context, keys[0], 60) is not None


# --- refresh_stale's inputs ----------------------------------------------------------------------


def test_refresh_stale_refuses_guids_that_are_not_a_list_of_str(context: Context) -> None:
    (obj,) = saved("c")
    for bad in ("abc", [1], [None], b"x", 7):
        with pytest.raises(ConfigurationError, match="guid"):
            dal.mirror.refresh_stale(FaultVm, guids=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="batch_size"):
        dal.mirror.refresh_stale(FaultVm, batch_size=True)
    report = dal.mirror.refresh_stale(FaultVm, guids=[obj.guid, obj.guid])
    assert (report.total, report.refreshed) == (1, 1)  # given twice: counted and refreshed once


# --- ClientCache ---------------------------------------------------------------------------------


class Client:
    def __init__(self, **settings: Any) -> None:
        self.settings, self.closed = settings, False

    def close(self) -> None:
        self.closed = True


def test_a_client_closed_by_a_rotation_while_handed_out_is_not_handed_out() -> None:
    cache: ClientCache[Client] = ClientCache(Client)
    shared, other = {"h": "one"}, {"h": "two"}
    cache.get(shared, owner="o1")
    fetched, resume = threading.Event(), threading.Event()
    real = cache._client

    def held_up(key: str, settings: Any) -> Client:
        client = real(key, settings)
        if threading.current_thread().name == "o2":  # fetched, not yet recorded for o2
            fetched.set()
            assert resume.wait(30)
        return client

    cache._client = held_up  # type: ignore[method-assign]
    got: dict[str, Client] = {}
    second = threading.Thread(target=lambda: got.setdefault("o2", cache.get(shared, owner="o2")), name="o2")
    second.start()
    assert fetched.wait(30)
    cache.get(other, owner="o1")  # o1 moves on: shared's client is closed, nobody else recorded yet
    resume.set()
    second.join(30)
    assert not got["o2"].closed
    assert shared in cache and cache.get(shared, owner="o2") is got["o2"]


def test_client_settings_and_owners_are_checked_before_anything_is_built() -> None:
    cache: ClientCache[Client] = ClientCache(Client)
    with pytest.raises(ConfigurationError, match="hashable"):
        cache.get({"h": 1}, owner=["cluster", 1])  # type: ignore[arg-type]
    assert len(cache) == 0
    proxy = cache.get(types.MappingProxyType({"h": 1, "o": types.MappingProxyType({"a": (1, 2)})}))
    assert cache.get({"h": 1, "o": {"a": [1, 2]}}) is proxy  # the same JSON, the same key


# --- a remote call that hangs while leading ------------------------------------------------------


HANG_MODULE = '''
import os, time
from dal import DataObject, Mirror, Property


class HangVm(DataObject):
    __properties = [Property("hostname", str, unique=True)]
    __mirror = Mirror(2, refresh_every=1)

    def _refresh(self):
        if os.environ.get("HANG") and self.hostname == "vm1":
            open(os.environ["HANG"], "w").close()
            time.sleep(float(os.environ.get("HANG_FOR", 3600)))  # a remote that never answers,
            # through a client without a timeout (or, with HANG_FOR, one that answers late)
        return {"name": self.hostname}
'''
#: HangVm's timeout: the lease's TTL, and how long a call may run before it is taken for hung
TTL = 2.0
#: process start-up, the standby's retry (a quarter of the TTL) and a loaded machine
SLACK = 10.0


def hang_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "hang_hybrids.py").write_text(HANG_MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    env.update({"PYTHONPATH": str(tmp_path), "DAL_HYBRIDS": "hang_hybrids", "DAL_NAMESPACE": "hang",
                "DAL_PERSISTENT_URL": f"sqlite:///{tmp_path / 'dal.sqlite3'}"})
    subprocess.run([sys.executable, "-c", "import dal; dal.configure(); from hang_hybrids import HangVm\n"
                    "for n in range(3): HangVm(data={'hostname': f'vm{n}'}).save()"],
                   cwd=tmp_path, env=env, check=True, timeout=120)
    return env


def start(tmp_path: Path, env: dict[str, str], *args: str, hang: bool = False) -> subprocess.Popen[str]:
    marker = tmp_path / "hanging"
    process = subprocess.Popen([sys.executable, "-m", "dal", "refresh", "--batch-size", "1", *args],
                               cwd=tmp_path, env={**env, "HANG": str(marker)} if hang else env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if hang:
        deadline = time.monotonic() + 60
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the refresher never reached the hanging call"
    return process


def stopped(process: subprocess.Popen[str], limit: float) -> tuple[int, str, float]:
    """SIGTERM ``process``; return its status, its output and how long it took to exit."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=limit)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    return process.returncode, out, time.monotonic() - sent


def lines_of(process: subprocess.Popen[str]) -> list[str]:
    """Collect ``process``'s output lines as they come, in a thread."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(line.rstrip("\n") for line in process.stdout)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_a_hung_remote_call_gives_up_the_lead_and_sigterm_ends_it(tmp_path: Path) -> None:
    env = hang_env(tmp_path)
    hung = start(tmp_path, env, hang=True)
    hung_at = time.monotonic()
    standby = start(tmp_path, env)
    said = lines_of(standby)
    try:
        # the hung leader gives up once the call has run for a TTL (seen by a renewal, every
        # third of it); the standby takes over at its next try, and refreshes what is due
        deadline = hung_at + TTL * 4 / 3 + SLACK
        while not any(" leading refresher/hang" in line for line in said) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(" leading refresher/hang" in line for line in said), said
        while not any("HangVm: " in line for line in said) and time.monotonic() < deadline + SLACK:
            time.sleep(0.05)
        assert any(line.endswith(", 0 failed") for line in said if "HangVm: " in line), said
        status, out, took = stopped(hung, SLACK)
        assert status == 0 and took < SLACK, (status, took, out)  # the hung call did not hold it
        assert "giving up the lead of refresher/hang: a remote call has run for over 2s" in out
        assert out.rstrip().endswith("stopped"), out
    finally:
        for process in (hung, standby):
            if process.poll() is None:
                process.kill()
                process.wait(30)


def test_sigterm_before_the_call_is_taken_for_hung_ends_a_once_run_past_it(tmp_path: Path) -> None:
    env = hang_env(tmp_path)
    once = start(tmp_path, env, "--once", hang=True)
    status, out, took = stopped(once, TTL + SLACK)
    # it waited for the call (its batch) until the call was taken for hung, then abandoned it
    assert status == 130, (status, out)
    assert "interrupted: stopped" in out
    assert took < TTL * 4 / 3 + SLACK
    assert open_persistent(env["DAL_PERSISTENT_URL"]).acquire_leadership("refresher/hang", "next", 5).acquired


def test_a_once_run_whose_remote_call_ran_past_the_ttl_fails_instead_of_claiming_a_standby(
        tmp_path: Path) -> None:
    env = {**hang_env(tmp_path), "HANG_FOR": str(TTL * 2.5)}  # slow, not endless: it returns
    once = start(tmp_path, env, "--once", hang=True)
    try:
        out, _ = once.communicate(timeout=TTL * 2.5 + SLACK)
    finally:
        if once.poll() is None:
            once.kill()
            once.wait(30)
    assert once.returncode == 1, (once.returncode, out)  # not 3: no other refresher leads
    assert "giving up the lead of refresher/hang: a remote call has run for over 2s" in out


def test_the_watch_sees_one_call_while_a_loader_refreshes_another_object_itself(context: Context) -> None:
    saved("outer", "inner")
    inner = next(obj.guid for obj in DataList(FaultVm) if obj._data["hostname"] == "inner")
    BEHAVIOUR["outer"] = lambda: {"inner": FaultVm(inner).hostname}  # a lazy refresh within the call
    told: list[bool] = []
    with refresh_module.watched(told.append):
        report = dal.mirror.refresh_stale(FaultVm, guids=[obj.guid for obj in DataList(FaultVm)
                                                          if obj._data["hostname"] == "outer"])
    assert report.refreshed == 1 and context.stats["mirror.faultvm.remote_calls"] == 2
    assert told == [True, False]  # the inner call did not end the outer one for the watch
