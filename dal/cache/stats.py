"""Statistics across processes: each process publishes its counters to the volatile store.

Counters (``Context.stats``) are kept per process without locks. A process whose volatile
store is shared (memcached) publishes a snapshot every few seconds while it changes, at
least every ``PUBLISH_TTL / 2`` while it lives (so an idle process stays listed), when its
context is replaced (``configure()`` again) and at exit, also the exit of a multiprocessing
worker (which skips ``atexit``). What a process counted since its last publish (at most
``PUBLISH_INTERVAL``) is lost when it ends by a signal (SIGKILL, or the SIGTERM of
``Pool.terminate()``, which ``with Pool() as pool:`` calls on leaving: ``close()`` and ``join()``
the pool first to keep those counts) or by ``os._exit`` (a forked child that does). A handler of
dal's own for SIGTERM in pool workers was tried and left out: a worker interrupted by it inside
the pool's own locks could hang ``terminate()``. ``dal stats`` and the ``dal cache`` commands but
``prefetch`` publish nothing (``Publisher.withdraw``); ``dal stats`` adds its own counters in
memory. Each context publishes under its own key, ``<cache prefix>s/<host>:<pid>:<run>:<n>``
(``<run>``: random, per process, so a process with the pid of an earlier one, as in a container
restarted in place, never overwrites its snapshot), listed in an index entry; ``dal stats`` sums
them all, reading without counting (neither quorum reads of a replicated memcached nor hits).
The index keeps a member while its snapshot is there, and at most :data:`INDEX_BYTES` of them,
the newest published: past that the oldest drop out of the report (before their TTL), rather
than the index outgrow the cache's item limit (memcached's 1 MiB), whose refused write deletes it.
A forked child starts its counters from zero and publishes them under its own pid, on its
own timer, so nothing is counted twice. A process-local store (``memory://``) can only show
the numbers of the process that asks.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import multiprocessing.util
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

from dal.backends.base import VolatileStore
from dal.backends.url import StoreURL
from dal.cache.counters import Stats
from dal.exceptions import BackendError
from dal.keys import Keys


class Context(Protocol):
    """What publishing and reporting need of a configured context (a ``dal.config.Context``)."""

    @property
    def keys(self) -> Keys: ...
    @property
    def volatile(self) -> VolatileStore: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def namespace(self) -> str: ...
    @property
    def persistent_url(self) -> StoreURL: ...
    @property
    def volatile_url(self) -> StoreURL: ...

    def reopen_if_forked(self) -> None: ...

PUBLISH_INTERVAL = 5.0
#: a published snapshot outlives its process by a day, then vanishes from the report
PUBLISH_TTL = 24 * 3600
INDEX_TRIES = 20
#: the most the index's JSON may take: a quarter of memcached's default item limit (about 3,000
#: members of a 64-character host name, 10,000 of a short one)
INDEX_BYTES = 256 * 1024


@dataclass
class Published:
    """What ``dal stats`` found: the snapshots (one per context, so per process unless it configured
    again) and their sum."""

    processes: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)


def publish(context: Context, *, touch: bool = False) -> bool:
    """Write this context's counters to the volatile store; ``False`` when it cannot.

    ``touch``: also rewrite the index entry, so it outlives ``PUBLISH_TTL`` while this lives.
    """
    prefix = context.keys.published_stats()
    snapshot = _snapshot(context)
    # one key per context: a process that configures again keeps its old context's snapshot
    me = _member(context)
    try:
        if not context.volatile.set(prefix + me, json.dumps(snapshot).encode(), PUBLISH_TTL):
            return False
        return _enlist(context, prefix, me, touch)
    except BackendError:
        return False


def _snapshot(context: Context) -> dict[str, Any]:
    return {"process": _process(), "run": _run, "context": _number(context), "published": time.time(),
            "counters": context.stats.snapshot()}


def _process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _member(context: Context) -> str:
    """The name of ``context``'s snapshot in the index, and the end of its key."""
    return f"{_process()}:{_run}:{_number(context)}"


def _new_run() -> str:
    """Return a random name for this run of a process: its pid alone may be an earlier process's."""
    return os.urandom(4).hex()


_run = _new_run()


_numbers: weakref.WeakKeyDictionary[Context, int] = weakref.WeakKeyDictionary()
_numbers_lock = threading.Lock()
_counter = itertools.count(1)


def _number(context: Context) -> int:
    """Return the number of ``context`` in this process (a forked child keeps its parent's)."""
    with _numbers_lock:
        number = _numbers.get(context)
        if number is None:
            number = _numbers[context] = next(_counter)
        return number


def _enlist(context: Context, prefix: str, member: str, touch: bool) -> bool:
    store, index_key = context.volatile, prefix + "index"
    for _ in range(INDEX_TRIES):
        raw, version = store.gets(index_key)
        members = set(json.loads(raw)) if raw else set()
        if member in members and not touch:
            return True
        value = json.dumps(_kept(store, prefix, members - {member}, member)).encode()
        if (store.cas(index_key, value, version, PUBLISH_TTL) if raw
                else store.add(index_key, value, PUBLISH_TTL)):
            return True
    return False


def _kept(store: VolatileStore, prefix: str, others: set[str], member: str) -> list[str]:
    """Return the index once ``member`` is in it: ``others`` whose snapshot is still there (one that
    expired is dropped), the newest published first while the index takes at most
    :data:`INDEX_BYTES`, so no write of it is ever refused for its size (which would delete it)."""
    found = _uncounted(store, [prefix + name for name in others]) if others else {}

    def published(name: str) -> float:
        try:
            return float(json.loads(found[prefix + name])["published"])
        except (ValueError, TypeError, KeyError):
            return 0.0  # not a snapshot dal wrote: the first to go

    kept, size = [member], len(json.dumps([member]))
    for name in sorted((name for name in others if prefix + name in found), key=published, reverse=True):
        size += len(json.dumps(name)) + 2  # and the ", " before it
        if size > INDEX_BYTES:
            break
        kept.append(name)
    return sorted(kept)


def _uncounted(store: VolatileStore, keys: list[str]) -> dict[str, bytes]:
    """Read statistics' own keys without counting them as the application's reads: neither as quorum
    reads of a replicated memcached nor as hits (``?hits=1``), where the store can tell them apart."""
    read = getattr(store, "get_many_uncounted", None)
    found: dict[str, bytes] = read(keys) if read is not None else store.get_many(keys)
    return found


def collect(context: Context, *, reader: bool = False) -> Published:
    """Return every published snapshot, and their sum.

    ``reader``: ``context`` is the reader's own (``dal stats``), which never publishes: its live
    counters are added here, in memory, instead of any snapshot it published before.
    """
    prefix = context.keys.published_stats()
    raw = _uncounted(context.volatile, [prefix + "index"]).get(prefix + "index")
    members = json.loads(raw) if raw else []
    if reader:
        mine = _member(context)
        members = [member for member in members if member != mine]
    found = _uncounted(context.volatile, [prefix + member for member in members])
    # a member without its snapshot: that one expired
    snapshots = [json.loads(found[prefix + member]) for member in members if prefix + member in found]
    result = Published()
    for snapshot in snapshots + ([_snapshot(context)] if reader else []):
        result.processes.append(snapshot)
        for name, amount in snapshot["counters"].items():
            result.totals[name] = result.totals.get(name, 0) + amount
    return result


class Publisher:
    """Publish one context's counters while they change, when it stops, and at exit."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self._last: dict[str, float] | None = None
        self._touched = 0.0  # time.monotonic() of the last publish that rewrote the index too
        self._timer: threading.Timer | None = None
        self._stopped = False
        self._withdrawn = False
        self._flush_lock = threading.Lock()
        atexit.register(self.flush)
        # a multiprocessing worker ends with os._exit, after running its finalizers instead
        self._finalizer = _at_worker_exit(self)
        multiprocessing.util.register_after_fork(self, Publisher._restart_in_worker)
        _publishers.add(self)
        self._schedule()

    def flush(self) -> None:
        with self._flush_lock:  # the timer, stop() and exit may flush at once
            snapshot = self.context.stats.snapshot()
            now = time.monotonic()
            # the snapshot and the index entry each expire PUBLISH_TTL after they were written: a touch
            # writes both again halfway, however often the counts change, so a live process stays listed
            touch = now - self._touched >= PUBLISH_TTL / 2
            if self._withdrawn or not snapshot or (snapshot == self._last and not touch):
                return
            # in a forked child, never through the parent's sockets (its answers could reach the parent)
            self.context.reopen_if_forked()
            if publish(self.context, touch=touch):
                self._last = snapshot
                if touch:
                    self._touched = now

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self.flush()  # the counts since the last tick
        atexit.unregister(self.flush)
        self._finalizer.cancel()

    def withdraw(self) -> None:
        """Stop, publishing nothing more, and remove what this context published: the numbers of
        a reader (``dal stats``) are shown once, never left behind as a reporting process."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        atexit.unregister(self.flush)
        self._finalizer.cancel()
        with self._flush_lock:  # after a flush under way; none publishes after this
            self._withdrawn = True
            with contextlib.suppress(BackendError):  # then it expires with its TTL
                self.context.volatile.delete(self.context.keys.published_stats() + _member(self.context))

    def _schedule(self) -> None:
        self._timer = threading.Timer(PUBLISH_INTERVAL, self._tick)
        self._timer.daemon = True
        self._timer.start()

    def _tick(self) -> None:
        if self._stopped:
            return
        self.flush()
        self._schedule()

    def _restart_in_child(self) -> None:
        """Start over in a forked child: its counters start from zero, its timer did not survive."""
        self._last = None
        self._touched = 0.0
        self._flush_lock = threading.Lock()  # another thread may have held it at the fork
        if not self._stopped:
            self._schedule()

    def _restart_in_worker(self) -> None:
        """In a new multiprocessing worker, which forgot every finalizer: register ours again."""
        if not self._stopped:
            self._finalizer = _at_worker_exit(self)


def _at_worker_exit(publisher: Publisher) -> multiprocessing.util.Finalize:
    # priority 0: run before the worker terminates its daemonic children, like atexit would
    return multiprocessing.util.Finalize(None, publisher.flush, exitpriority=0)


_publishers: weakref.WeakSet[Publisher] = weakref.WeakSet()


def _restart_publishers_in_child() -> None:
    global _run
    _run = _new_run()  # a forked child may get the pid of an earlier child of this process
    for publisher in list(_publishers):
        publisher._restart_in_child()


os.register_at_fork(after_in_child=_restart_publishers_in_child)


def report(context: Context, published: Published, local_entries: list[Any] | None, *,
           persistent: object = None) -> list[str]:
    """Return the lines ``dal stats`` prints; ``persistent``: the store URL shown (default: the context's)."""
    totals = published.totals
    shown = context.persistent_url if persistent is None else persistent
    lines = [f"statistics of namespace {context.namespace!r}: persistent {shown}, "
             f"volatile {context.volatile_url}",
             _reporting(published)]
    objects = {name[len("object_"):]: value for name, value in totals.items() if name.startswith("object_")}
    lines += _section("objects", objects)
    quorum = [(label, int(totals.get(f"quorum_{event}", 0))) for event, label in QUORUM_COLUMNS]
    if any(amount for _, amount in quorum):
        lines.append("  replicated cache reads: " + ", ".join(f"{n} {label}" for label, n in quorum))
    lines.append(f"  transactions: {int(totals.get('commits', 0))}")
    dynamics: dict[str, dict[str, float]] = {}
    for name, amount in totals.items():
        if name.startswith("dynamic.") and name.count(".") >= 3:
            owner, event = name[len("dynamic."):].rsplit(".", 1)
            dynamics.setdefault(owner, {})[event] = amount
    if dynamics:
        lines.append(f"  {'dynamic':<32}{'hits':>8}{'misses':>8}{'computed':>10}{'lock waits':>12}"
                     f"{'compute ms':>12}")
        for owner in sorted(dynamics):
            row = dynamics[owner]
            lines.append(f"  {owner:<32}{int(row.get('hits', 0)):>8}{int(row.get('misses', 0)):>8}"
                         f"{int(row.get('computations', 0)):>10}{int(row.get('lock_waits', 0)):>12}"
                         f"{row.get('compute_seconds', 0) * 1000:>12.1f}")
    lines += _mirror_rows(totals)
    if local_entries is not None:
        size = sum(entry.size for entry in local_entries)
        lines.append(f"  memory cache of this process: {len(local_entries)} entries, {size} bytes")
        for entry in sorted(local_entries, key=lambda e: -e.hits)[:10]:
            lines.append(f"    {entry.hits:>6} hits {entry.size:>8} B  {entry.key}")
    return lines


#: the quorum counters of a replicated cache (``memcached://...?replicas=N``): (event, label)
QUORUM_COLUMNS = (("hits", "quorum hits"), ("misses", "misses"), ("disagreements", "disagreements"),
                  ("short_reads", "short reads"), ("repairs", "repairs"), ("rejected", "rejected replies"))


#: the columns of the mirror rows: (counter event, heading)
MIRROR_COLUMNS = (("remote_calls", "calls"), ("bulk_runs", "bulk runs"), ("refreshed", "changed"),
                  ("unchanged", "unchanged"), ("failures", "failed"), ("waits", "waits"))


def _mirror_rows(totals: dict[str, float]) -> list[str]:
    """Return the rows of the mirrored hybrids (``mirror.<hybrid>.<event>`` counters), if any."""
    mirrors: dict[str, dict[str, float]] = {}
    for name, amount in totals.items():
        if name.startswith("mirror.") and name.count(".") == 2:
            _, hybrid, event = name.split(".")
            mirrors.setdefault(hybrid, {})[event] = amount
    if not mirrors:
        return []
    lines = [f"  {'mirrored':<32}" + "".join(f"{heading:>10}" for _, heading in MIRROR_COLUMNS)
             + f"{'remote ms':>11}"]
    for hybrid in sorted(mirrors):
        row = mirrors[hybrid]
        counts = "".join(f"{int(row.get(event, 0)):>10}" for event, _ in MIRROR_COLUMNS)
        lines.append(f"  {hybrid:<32}{counts}{row.get('remote_seconds', 0) * 1000:>11.1f}")
    return lines


def _reporting(published: Published) -> str:
    """Count processes (``host:pid`` and its run); a process that configured more than once published
    per context."""
    snapshots = len(published.processes)
    processes = len({(snapshot.get("process"), snapshot.get("run")) for snapshot in published.processes})
    contexts = f" ({snapshots} contexts)" if snapshots > processes else ""
    return f"  processes reporting: {processes}{contexts}"


def _section(title: str, counters: dict[str, float]) -> list[str]:
    if not counters:
        return [f"  {title}: none yet"]
    return [f"  {title}: " + ", ".join(f"{name} {int(value)}" for name, value in sorted(counters.items()))]
