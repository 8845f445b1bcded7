"""``dal refresh``: bulk refreshes of mirrored hybrids, one leader at a time, on SQLite and on etcd.

The refreshers are real ``python -m dal refresh`` processes; the remote is the loopback HTTP
server of :mod:`dal.testing.remote`; the hybrids are those of ``tests/refresher_hybrids.py``,
which log every remote call's start and end (with the caller's pid) to a file, so the tests check
that two refreshers never called the remote at the same time.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PairURLs
from refresher_hybrids import TIMEOUT, RefresherDisk, RefresherVm

from dal import DataList
from dal.cli.leader import MAX_RETRY
from dal.config import Context
from dal.mirror import frozen
from dal.testing.remote import Remote

TESTS = Path(__file__).parent
HMAC_KEY = "refresher-tests-hmac-key-0123456789"
#: the mirrors' timeout (so the lease's TTL) in the takeover test: under 2 s, so that etcd's lease
#: (whole seconds, 2 s at least) outlasts it, and `timeout + retry` alone would fail there
TAKEOVER_TIMEOUT = 1.2
#: etcd's minimum lease TTL (1.5 election timeouts, rounded up to whole seconds: the test servers
#: keep etcd's default 1 s), and how often etcd looks for expired leases
ETCD_MIN_LEASE, ETCD_EXPIRY_CHECK = 2, 0.5
#: what the standby's own round trips and its line reaching the test may add on a loaded host. The
#: kill comes 0 to TTL/3 after the last renewal, so the bound holds from the kill too; on etcd a
#: takeover comes at least 2 - 1.2/3 = 1.6 s after it, past the 1.5 s of `timeout + retry` plus this
TAKEOVER_MARGIN = 0.35


def takeover_lease(persistent_url: str, timeout: float) -> float:
    """The TTL of the lease the leader is granted (docs/refresher.md, One refresher at a time)."""
    if persistent_url.startswith("etcd://"):
        return max(math.ceil(timeout), ETCD_MIN_LEASE)
    return timeout


def takeover_bound(persistent_url: str, timeout: float) -> float:
    """The documented bound on a takeover after the leader's last renewal: the lease's TTL, etcd's
    expiry check, and the standby's retry interval."""
    check = ETCD_EXPIRY_CHECK if persistent_url.startswith("etcd://") else 0.0
    retry = max(0.05, min(timeout / 4, MAX_RETRY))
    return takeover_lease(persistent_url, timeout) + check + retry


@pytest.fixture
def remote() -> Iterator[Remote]:
    with Remote() as server:
        for n in range(5):
            server.answers[f"/vm/vm{n}"] = {"status": "running", "memory": 512 * n}
        for n in range(3):
            server.answers[f"/disk/d{n}"] = {"size": 10 * n}
        yield server


@pytest.fixture
def model(pair_urls: PairURLs) -> Context:
    """Five virtual machines and three disks, never refreshed (all stale)."""
    context = pair_urls.configure(HMAC_KEY)
    for n in range(5):
        RefresherVm(data={"hostname": f"vm{n}"}).save()
    for n in range(3):
        RefresherDisk(data={"name": f"d{n}"}).save()
    return context


def environment(pair_urls: PairURLs, remote: Remote, log: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    env.update({"DAL_PERSISTENT_URL": pair_urls.persistent, "DAL_VOLATILE_URL": pair_urls.volatile,
                "DAL_NAMESPACE": pair_urls.namespace, "DAL_HMAC_KEY": HMAC_KEY,
                "DAL_HYBRIDS": "refresher_hybrids", "DAL_TEST_REMOTE": remote.url,
                "PYTHONPATH": os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])})
    if log is not None:
        env["DAL_TEST_REFRESH_LOG"] = str(log)
    return env


def refresh_once(pair_urls: PairURLs, remote: Remote, *args: str) -> subprocess.CompletedProcess[str]:
    env = environment(pair_urls, remote)
    # The runs of one test follow each other: what one refreshed must not go stale before the
    # next looks, however slowly a loaded machine starts a process (each run is a new one).
    # The tests that wait for objects to go stale run `dal refresh` without --once, not this.
    env["DAL_TEST_MIRROR_TIMEOUT"] = "120"
    return subprocess.run([sys.executable, "-m", "dal", "refresh", "--once", *args], cwd=TESTS,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


# --- once ----------------------------------------------------------------------------------------


def test_once_refreshes_every_stale_object_in_batches(model: Context, pair_urls: PairURLs,
                                                      remote: Remote) -> None:
    assert remote.count() == 0  # saving objects called nothing
    done = refresh_once(pair_urls, remote)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "RefresherVm: 5 stale: 5 changed, 0 unchanged, 0 failed" in lines
    assert "RefresherDisk: 3 stale: 3 changed, 0 unchanged, 0 failed" in lines
    assert lines[-1] == ("refreshed 2 of 2 mirrored hybrids: 8 stale objects, 8 changed, 0 unchanged, "
                         "0 failed")
    # five machines in one bulk call; the disks, without _refresh_many, one call each
    assert remote.calls() == {"/vms": 1, "/disk/d0": 1, "/disk/d1": 1, "/disk/d2": 1}
    assert "refresh RefresherVm [" in done.stderr  # the progress bar, on stderr
    # nothing is stale any more: a second run calls nothing
    again = refresh_once(pair_urls, remote)
    assert again.returncode == 0, again.stderr
    assert "RefresherVm: 0 stale: 0 changed, 0 unchanged, 0 failed" in again.stdout.splitlines()
    assert remote.count() == 4


def test_batches_follow_batch_size(model: Context, pair_urls: PairURLs, remote: Remote) -> None:
    done = refresh_once(pair_urls, remote, "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert remote.count("/vms") == 3  # 5 machines, 2 per call


def test_failures_are_listed_and_exit_1(model: Context, pair_urls: PairURLs, remote: Remote) -> None:
    remote.failures["/disk/d1"] = 503
    remote.failures["/vms"] = 500
    done = refresh_once(pair_urls, remote)
    assert done.returncode == 1, done.stderr
    with frozen():
        bad_disk = next(disk for disk in _all(RefresherDisk) if disk.name == "d1")
    lines = done.stdout.splitlines()
    assert "RefresherDisk: 3 stale: 2 changed, 0 unchanged, 1 failed" in lines
    assert any(re.fullmatch(rf"  failed {bad_disk.guid}: .*503.*", line) for line in lines), lines
    # the bulk call failed: every machine is listed, and the disks were refreshed all the same
    assert "RefresherVm: 5 stale: 0 changed, 0 unchanged, 5 failed" in lines
    assert sum(line.startswith("  failed ") for line in lines) == 6
    assert remote.calls() == {"/vms": 1, "/disk/d0": 1, "/disk/d1": 1, "/disk/d2": 1}
    listed = refresh_once(pair_urls, remote, "--limit", "2")
    assert listed.returncode == 1
    assert "  ... and 3 more (--limit 0 lists all)" in listed.stdout.splitlines()
    # the remote is back: the next run refreshes what failed, and succeeds
    remote.failures.clear()
    healed = refresh_once(pair_urls, remote)
    assert healed.returncode == 0, healed.stdout
    assert "RefresherDisk: 1 stale: 1 changed, 0 unchanged, 0 failed" in healed.stdout.splitlines()


def test_once_as_a_standby_refreshes_nothing_and_exits_3(model: Context, pair_urls: PairURLs,
                                                         remote: Remote) -> None:
    role = f"refresher/{pair_urls.namespace}"
    lease = model.persistent.acquire_leadership(role, "another-host:42:leader", 60)
    assert lease.acquired
    try:
        done = refresh_once(pair_urls, remote)
        assert done.returncode == 3, done.stderr
        assert f"another refresher leads {role} (another-host:42:leader); nothing refreshed" in done.stderr
        assert remote.count() == 0
    finally:
        model.persistent.release_leadership(lease)
    assert refresh_once(pair_urls, remote).returncode == 0
    # and the refresher let go of the lead when it was done
    assert model.persistent.acquire_leadership(role, "next", 5).acquired


def test_once_stopped_by_sigterm_finishes_its_batch_and_exits_130(model: Context, pair_urls: PairURLs,
                                                                  remote: Remote, tmp_path: Path) -> None:
    remote.delay = 0.5
    log = tmp_path / "calls.log"
    process = subprocess.Popen([sys.executable, "-m", "dal", "refresh", "--once", "--batch-size", "1"],
                               cwd=TESTS, env=environment(pair_urls, remote, log), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and " start " in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.exists(), "the refresher never called the remote"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert process.returncode == 130, (out, err)
    assert "interrupted: stopped, or no longer the leader" in out
    # the call in flight finished (its batch was stored), and no other batch began
    lines = log.read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["start", "end"]
    assert remote.count() == 1
    # it let go of the lead on its way out
    assert model.persistent.acquire_leadership(f"refresher/{pair_urls.namespace}", "next", 5).acquired


def test_bad_input_exits_2(tmp_path: Path, pair_urls: PairURLs, remote: Remote) -> None:
    done = refresh_once(pair_urls, remote, "--batch-size", "0")
    assert done.returncode == 2 and "error: --batch-size must be 1 or more" in done.stderr
    (tmp_path / "plain_hybrids.py").write_text(
        "from dal import DataObject, Property\n\n"
        "class RefresherPlain(DataObject):\n"
        "    __properties = [Property('name', str)]\n")
    env = environment(pair_urls, remote)
    env["PYTHONPATH"] = str(tmp_path)
    pair_urls.configure()  # the store exists (a SQLite file): refresh opens no new one
    plain = subprocess.run([sys.executable, "-m", "dal", "refresh", "--once", "--hybrids", "plain_hybrids"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert plain.returncode == 2
    assert "error: no mirrored hybrid in 'plain_hybrids'" in plain.stderr


# --- the loop: one leader, a standby that takes over ---------------------------------------------


class Refresher:
    """A ``dal refresh`` loop in its own process; its output lines are kept with when they came."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "dal", "refresh"], cwd=TESTS, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, pattern: str, limit: float = 30.0) -> float:
        """Return when a line matching ``pattern`` came; fail after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                if re.search(pattern, line):
                    return when
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        seen = [line for _, line in self.lines]
        raise AssertionError(f"no line matching {pattern!r} within {limit}s: {seen}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def calls_by_process(log: Path, killed: int, killed_at: float) -> dict[int, list[tuple[float, float]]]:
    """Return each process's remote calls as (start, end); a call the kill cut short ends at the kill."""
    calls: dict[int, list[tuple[float, float]]] = {}
    open_calls: dict[int, float] = {}
    for line in log.read_text().splitlines():
        pid_text, what, when_text = line.split()
        pid, when = int(pid_text), float(when_text)
        if what == "start":
            assert pid not in open_calls
            open_calls[pid] = when
        else:
            calls.setdefault(pid, []).append((open_calls.pop(pid), when))
    for pid, start in open_calls.items():
        assert pid == killed, f"process {pid} left a call unfinished without being killed"
        calls.setdefault(pid, []).append((start, killed_at))
    return calls


def test_one_refresher_at_a_time_and_a_standby_takes_over(model: Context, pair_urls: PairURLs,
                                                          remote: Remote, tmp_path: Path) -> None:
    """Long because it is one story: lead, stand by, kill the leader, take over, stop cleanly."""
    remote.delay = 0.2  # each call takes a while, so overlapping calls could not go unseen
    log = tmp_path / "calls.log"
    env = environment(pair_urls, remote, log)
    env["DAL_TEST_MIRROR_TIMEOUT"] = str(TAKEOVER_TIMEOUT)
    lease = takeover_lease(pair_urls.persistent, TAKEOVER_TIMEOUT)
    bound = takeover_bound(pair_urls.persistent, TAKEOVER_TIMEOUT) + TAKEOVER_MARGIN
    first = Refresher(env)
    second: Refresher | None = None
    try:
        first.wait_for(rf" leading refresher/\S+ as \S+ \(lease of {lease:g}s\)$")
        second = Refresher(env)
        second.wait_for(r" standby: refresher/\S+ is led by ")
        first.wait_for(r"RefresherVm: 5 stale: 5 changed")
        # objects go stale every TIMEOUT seconds: let the leader refresh them again while the standby waits
        first.wait_for(r"RefresherVm: 5 stale: 0 changed, 5 unchanged", limit=TIMEOUT * 4 + 10)
        leader_pid = first.process.pid
        killed_wall, killed_at = time.time(), time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
        took_over = second.wait_for(r" leading refresher/", limit=bound + 10)
        assert took_over - killed_at <= bound, (took_over - killed_at, bound)
        # the leader, which looks ahead and so refreshes at nearly every pass, may have died holding
        # an object's lock in the shared volatile store: the new one waits it out (lock_timeout)
        lock_timeout = RefresherVm._meta.mirror.lock_timeout
        second.wait_for(r"RefresherVm: 5 stale: ", limit=TIMEOUT * 4 + 10 + lock_timeout)
        # SIGTERM: the loop ends cleanly and lets go of the lead at once
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(30) == 0
        second.wait_for(r" stopped$")
        assert model.persistent.acquire_leadership(f"refresher/{pair_urls.namespace}", "after", 5).acquired
    finally:
        first.stop()
        if second is not None:
            second.stop()
    calls = calls_by_process(log, leader_pid, killed_wall)
    assert set(calls) == {leader_pid, second.process.pid}
    # the standby called nothing while the leader lived, and no two calls ever overlapped
    assert min(start for start, _ in calls[second.process.pid]) >= killed_wall
    every = sorted(call for process in calls.values() for call in process)
    for (_, end), (start, _) in itertools.pairwise(every):
        assert end <= start, every
    assert len(calls[leader_pid]) >= 4  # two passes over the machines and the disks at least


def _all(cls: type[RefresherDisk]) -> list[RefresherDisk]:
    with frozen():  # reading the stored data only: this test process must not call the remote itself
        return list(DataList(cls))
