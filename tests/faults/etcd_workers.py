"""Worker processes of the etcd fault scenarios (tests/faults/test_etcd_faults.py).

They live in their own module because ``multiprocessing``'s spawn start method makes each
child import the function it runs. Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pytest

from dal import configure
from dal.backends.etcd.store import EtcdStore
from dal.cache.journal import Journal
from dal.exceptions import BackendError, CommitOutcomeUnknownError, ConcurrencyError, RaceConditionError
from dal.testing.proxy import DropHandle, LoopbackProxy
from faults.fault_hybrids import Counter

#: seconds a worker sleeps after a store error before it calls save() again
ERROR_PAUSE = 0.05
#: slots of the array the parent shares with a cutting worker (see :class:`AnswerCutter`): the parent's
#: request to cut the answer to the next commit, the port of the server whose answer the worker's proxy
#: holds (-1: the request found no answer to hold), and the answers the worker's journal found lost
REQUEST, HELD, LOST = 0, 1, 2
#: seconds a cutting worker's proxy holds the answer it cuts before resetting the connection (less
#: than the store timeout of the scenarios, so the client sees the reset, not a timeout)
HOLD = 1.0


def _load(guid: str, deadline: float, tally: dict[str, Any]) -> Counter:
    """Load the counter, retrying store errors (an election, a dead member) until ``deadline``."""
    while True:
        try:
            return Counter(guid)
        except BackendError:
            tally["load_errors"] += 1
            if time.monotonic() >= deadline:
                raise
            time.sleep(ERROR_PAUSE)


def _increment(guid: str, deadline: float, tally: dict[str, Any]) -> None:
    """Add one to the counter the way dal documents it; return once save() returned."""
    counter = _load(guid, deadline, tally)
    counter.count += 1
    while True:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"one increment did not complete before the worker's deadline: {tally}")
        try:
            counter.save(datastore_wins=None)
            return
        except ConcurrencyError:
            tally["conflicts"] += 1
            counter = _load(guid, deadline, tally)
            counter.count += 1
        except RaceConditionError:
            tally["races"] += 1
            counter = _load(guid, deadline, tally)
            counter.count += 1
        except CommitOutcomeUnknownError:
            # the SAME object: its next save first learns whether this commit was applied
            tally["unknown_outcomes"] += 1
            time.sleep(ERROR_PAUSE)
        except BackendError as exc:
            tally["backend_errors"] += 1
            if "retrying is safe" in str(exc):
                tally["nothing_written"] += 1
            time.sleep(ERROR_PAUSE)


def count_worker(index: int, persistent: str, volatile: str, namespace: str, guid: str, increments: int,
                 pace: float, budget: float, faults_done: Any, progress: Any, results: Any) -> None:
    """Increment one counter ``increments`` times; put what happened on ``results``.

    While the parent still injects faults (``faults_done`` not set), increments are paced
    ``pace`` s apart, so they overlap every fault; the last one waits for the faults to end,
    so no fault comes after every worker has finished. ``progress[index]`` is the number of
    increments done so far.
    """
    started = time.monotonic()
    deadline = started + budget
    tally: dict[str, Any] = {"index": index, "done": 0, "conflicts": 0, "races": 0, "unknown_outcomes": 0,
                             "backend_errors": 0, "nothing_written": 0, "load_errors": 0,
                             "answers_lost": 0, "slowest": 0.0, "finished": False, "error": None}
    context = None
    try:
        context = configure(persistent, volatile, namespace=namespace)
        while tally["done"] < increments and time.monotonic() < deadline:
            if tally["done"] == increments - 1:
                faults_done.wait(max(0.0, deadline - time.monotonic()))
            elif not faults_done.is_set():
                faults_done.wait(pace)
            began = time.monotonic()
            _increment(guid, deadline, tally)
            tally["slowest"] = max(tally["slowest"], time.monotonic() - began)
            tally["done"] += 1  # counted once, when save() returned
            progress[index] = tally["done"]
        tally["finished"] = tally["done"] == increments
    except BaseException:
        tally["error"] = traceback.format_exc()
    finally:
        if context is not None:
            tally["answers_lost"] = int(context.stats["commit_answers_lost"])
            context.close()
        tally["seconds"] = round(time.monotonic() - started, 2)
        results.put(tally)


class AnswerCutter:
    """In a counter worker: loopback proxies in front of the store's servers, through which the worker
    reaches its store, and which cut the answer to one commit whenever the parent asks.

    ``shared`` is an integer array indexed by :data:`REQUEST`, :data:`HELD` and :data:`LOST`. Asked
    (``shared[REQUEST] == 1``), the next commit's answer is held :data:`HOLD` seconds on the proxy in use
    and then the connection is reset; once the server's answer reached the proxy (the server took the
    commit: applied it, or refused it on a check another writer's commit broke), ``shared[HELD]`` is the
    server's port, which the parent then kills. After each of the journal's commits and fences,
    ``shared[LOST]`` is the count of answers it found lost to an applied commit (``commit_answers_lost``).
    """

    def __init__(self, shared: Any, persistent: str) -> None:
        self.shared = shared
        hosts = persistent.split("://", 1)[1].split("?", 1)[0].split("/", 1)[0].split(",")
        self.proxies = [LoopbackProxy((host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1]))).start()
                        for host in hosts]

    def spell(self, url: str) -> str:
        """Return ``url`` with each server this cuts answers of replaced by its proxy."""
        for proxy in self.proxies:
            url = url.replace(f"{proxy.target[0]}:{proxy.target[1]}", proxy.netloc, 1)
        return url

    def arm(self, probe: Callable[[], object]) -> None:
        """If the parent asked, cut the answer to the request about to go out (a commit's); ``probe`` reads
        something through the endpoint in use, which shows which proxy that is (one proxy: not called)."""
        if self.shared[REQUEST] != 1:
            return
        proxy = self.proxies[0] if len(self.proxies) == 1 else self._in_use(probe)
        if proxy is None:
            return  # another request of this process went out meanwhile: the next commit is cut
        self.shared[REQUEST] = 0
        try:
            handle = proxy.drop_next_answer("hold", hold=HOLD)
        except RuntimeError:
            self.shared[HELD] = -1
            return
        threading.Thread(target=self._report, args=(handle, proxy.target[1]), daemon=True).start()

    def _in_use(self, probe: Callable[[], object]) -> LoopbackProxy | None:
        before = [proxy.bytes_to_server for proxy in self.proxies]
        with contextlib.suppress(BackendError):
            probe()
        grown = [proxy for proxy, sent in zip(self.proxies, before, strict=True)
                 if proxy.bytes_to_server > sent]
        return grown[0] if len(grown) == 1 else None

    def _report(self, handle: DropHandle, port: int) -> None:
        self.shared[HELD] = port if handle.wait(HOLD + 1.0) else -1

    def watch_journal(self) -> None:
        """Publish the journal's count of lost answers after each of its commits and fences."""
        shared = self.shared
        for name in ("commit", "resolve"):
            real = getattr(Journal, name)

            def publish(journal: Journal, *args: Any, real: Any = real, **kwargs: Any) -> Any:
                try:
                    return real(journal, *args, **kwargs)
                finally:
                    shared[LOST] = int(journal.stats["commit_answers_lost"])

            setattr(Journal, name, publish)

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()


def cut_answer(shared: Any, busy: Callable[[], bool], within: float = 10.0) -> int:
    """Ask a cutting worker to cut the answer to its next commit (see :class:`AnswerCutter`); return the
    port of the server whose answer its proxy holds, once that answer came, or 0 when none came within
    ``within`` s or while ``busy()`` (the worker still commits) held."""
    shared[HELD] = 0
    shared[REQUEST] = 1
    deadline = time.monotonic() + within
    held = 0
    while not held and time.monotonic() < deadline and (busy() or shared[REQUEST] == 0):
        time.sleep(0.002)
        held = shared[HELD]
    shared[REQUEST] = 0
    return max(held, 0)


def cutting_etcd_worker(shared: Any, index: int, persistent: str, volatile: str, *args: Any) -> None:
    """Run :func:`count_worker` on etcd through an :class:`AnswerCutter`'s proxies."""
    cutter = AnswerCutter(shared, persistent)
    cutter.watch_journal()
    real = EtcdStore.commit

    def commit(store: EtcdStore, checks: Any, ops: Any) -> Any:
        cutter.arm(lambda: store.get("dal-fault-probe"))
        return real(store, checks, ops)

    EtcdStore.commit = commit  # type: ignore[method-assign]
    try:
        count_worker(index, cutter.spell(persistent), volatile, *args)
    finally:
        cutter.close()


def spelling_peer(persistent: str, volatile: str, namespace: str, conn: Connection, budget: float) -> None:
    """Serve load and save requests from the parent through ``conn`` until told to stop.

    Messages: ``("load", guid)`` answers the count loaded through the cache;
    ``("save", guid, value)`` stores ``value`` as the count and answers ``"saved"``;
    ``("stop",)`` ends. The first answer is ``("ready", cache_root)``.
    """
    deadline = time.monotonic() + budget
    context = None
    try:
        context = configure(persistent, volatile, namespace=namespace)
        conn.send(("ready", context.keys.cache_root))
        while time.monotonic() < deadline:
            if not conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                continue
            message = conn.recv()
            if message[0] == "stop":
                break
            if message[0] == "load":
                conn.send(("loaded", Counter(message[1]).count))
            elif message[0] == "save":
                counter = Counter(message[1])
                counter.count = message[2]
                counter.save()
                conn.send(("saved", counter.count))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        if context is not None:
            context.close()
        conn.close()


def wait_for_first_increments(processes: list[Any], progress: Any, results: Any, faults_done: Any,
                              limit: float = 120.0) -> None:
    """Return once every counter worker has done an increment (spawned interpreters start slowly);
    fail the test, with the reports of the workers that ended, when one does not within ``limit``."""
    deadline = time.monotonic() + limit
    while min(progress) < 1 and time.monotonic() < deadline:
        if not all(process.is_alive() for process in processes):
            break  # a worker failed early: its report says why
        time.sleep(0.05)
    if min(progress) < 1:
        faults_done.set()
        early = []
        for _ in range(sum(not process.is_alive() for process in processes)):
            with contextlib.suppress(queue.Empty):
                early.append(results.get(timeout=5))
        pytest.fail(f"the workers did not all start within {limit:g} s ({list(progress)}): {early}")


def collect_tallies(processes: list[Any], results: Any, count: int, budget: float) -> list[dict[str, Any]]:
    """Return the reports of ``count`` counter workers, waiting at most ``budget`` seconds (fewer when
    the workers all ended), then join them."""
    tallies: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget
    while len(tallies) < count and time.monotonic() < deadline:
        try:
            tallies.append(results.get(timeout=1.0))
        except queue.Empty:  # check the workers are still alive
            if not any(process.is_alive() for process in processes) and results.empty():
                break
    for process in processes:
        process.join(timeout=max(1.0, deadline - time.monotonic()))
    return tallies


#: what each counter worker counts besides its increments
COUNTS = ("conflicts", "races", "unknown_outcomes", "backend_errors", "nothing_written", "load_errors",
          "answers_lost")


def sum_tallies(tallies: list[dict[str, Any]]) -> dict[str, int]:
    """Return each of the workers' ``COUNTS`` summed over their reports."""
    return {name: sum(tally[name] for tally in tallies) for name in COUNTS}


def stop_workers(processes: list[Any], faults_done: Any) -> None:
    """Tell the workers the faults are over and kill any still running (a test that failed midway)."""
    faults_done.set()
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
