"""Refresh the stale objects of every mirrored hybrid from their remotes, in bulk.

Each stale object is refreshed in batches (one ``_refresh_many`` call per batch when the hybrid defines
it, else ``_refresh`` per object), with a progress bar on stderr and a summary on stdout. A failing
object or remote is listed (guid and error) and never stops the others.

``--once`` refreshes every mirrored hybrid once, then exits: 0 when every refresh succeeded, 1 when some
failed, 3 when another refresher leads (or took the lead meanwhile), 130 when stopped by SIGTERM or
SIGINT before it was done. Without it, the command runs until SIGTERM or SIGINT, refreshing each hybrid
every ``refresh_every`` seconds of its ``Mirror`` (a hybrid without ``refresh_every`` is left to
``--once`` runs and the lazy refresh), and exits 0 once stopped. A pass in the loop looks ahead
(:func:`look_ahead`).

Only one refresher works at a time per namespace, across processes and machines: the leader holds a lease
on ``refresher/<namespace>`` in the durable store, with the smallest ``timeout`` of the hybrids as its
TTL, renewed by a thread every third of it and asked of the store before each batch (a leader whose
lease was lost meanwhile stops there). Others wait as standbys and retry; when the leader dies, its
lease expires and a standby takes over within ``timeout`` seconds (plus its retry interval). On SIGTERM
or SIGINT the leader finishes the batch in hand, releases the lease at once, and exits. A remote call
running longer than the lease's TTL is taken for hung (:attr:`Leader.stuck`): the lead is given up (the
lease released) for a standby, and a signal abandons the batch at once. A loop waits for a durable
store it cannot reach at start, saying so once; a store it reaches that refuses its setting (a
ConfigurationError) ends it at once, as it ends ``--once``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dal
from dal.cli import existing_store
from dal.cli.leader import MAX_WAIT, Abandoned, Complaint, Leader, say, stopped_by_signals
from dal.cli.progress import Progress
from dal.exceptions import BackendError, ConfigurationError, DalError
from dal.mirror import RefreshReport, mirrored_hybrids, refresh_stale
from dal.mirror.bulk import stale_guids
from dal.mirror.refresh import watched
from dal.tools.erd import hybrids_in

if TYPE_CHECKING:
    from dal.config import Context
    from dal.objects.dataobject import DataObject

HELP = "refresh the stale objects of mirrored hybrids from their remotes (--once, or in a loop)"

#: exit status of ``--once`` when another refresher leads: nothing was refreshed, nothing failed
EXIT_STANDBY = 3
#: the share of ``refresh_every`` a loop's look-ahead adds for the loop waking late
LATE_SHARE = 0.1
#: seconds between two attempts of a loop started while its durable store cannot be reached
START_RETRY = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true",
                        help="refresh every mirrored hybrid once and exit (1 when some refresh failed, "
                             f"{EXIT_STANDBY} when another refresher leads)")
    parser.add_argument("--batch-size", type=int, default=100, metavar="N",
                        help="objects per remote call of _refresh_many (default 100)")
    parser.add_argument("--limit", type=int, default=10, metavar="N",
                        help="failures listed per hybrid and pass (default 10; 0 lists all)")
    parser.add_argument("--look-ahead", type=float, default=None, metavar="SECONDS",
                        help="also refresh the objects that will be stale within SECONDS (default: 0 "
                             "with --once; in a loop, each hybrid's refresh_every plus a margin)")


@dataclass
class Outcome:
    """What one pass over some hybrids did: their reports, and the hybrids that could not finish."""

    reports: dict[str, RefreshReport] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(report.failed for report in self.reports.values())


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise DalError(f"--batch-size must be 1 or more, not {args.batch_size}")
    if args.limit < 0:
        raise DalError(f"--limit must be 0 (all) or more, not {args.limit}")
    if args.look_ahead is not None and not 0 <= args.look_ahead < float("inf"):
        raise DalError(f"--look-ahead must be a finite number of seconds >= 0, not {args.look_ahead}")
    stop = threading.Event()
    if args.once:
        context = _configure(args)
    else:  # a loop waits for its durable store, as a standby waits for the lead
        with stopped_by_signals(stop, None):
            reached = _configured_when_reachable(args, stop)
        if reached is None:
            say("stopped")
            return 0
        context = reached
    # the --hybrids modules' own: the registry also holds hybrids the command line imports itself
    # (the demo's sample model), which are not this application's to refresh
    own = set(hybrids_in(args.hybrids.split(",")))
    hybrids = [cls for cls in mirrored_hybrids() if cls in own]
    if not hybrids:
        raise DalError(f"no mirrored hybrid in {args.hybrids!r}: declare one with __mirror = Mirror(timeout) "
                       "and name its module with --hybrids (or DAL_HYBRIDS)")
    ttl = min(_mirror(cls).timeout for cls in hybrids)
    leader = Leader(context.persistent, f"refresher/{context.namespace}", ttl)
    with stopped_by_signals(stop, leader):
        if args.once:
            return _once(hybrids, leader, stop, args)
        return _loop(hybrids, leader, stop, args)


def _configure(args: argparse.Namespace) -> Context:
    return dal.configure(existing_store(args.persistent), args.volatile, namespace=args.namespace)


def _configured_when_reachable(args: argparse.Namespace, stop: threading.Event) -> Context | None:
    """Configure the stores, retrying every :data:`START_RETRY` seconds while the durable store cannot
    be reached (Redis is read at ``configure()``); ``None`` when stopped meanwhile. A bad setting
    raises at once, as with ``--once``: a ConfigurationError, also one the store itself found (a
    SQLite file that is no database, a Redis database number or password the server refuses), which
    is a BackendError too but one no retry mends."""
    complaint = Complaint()
    while not stop.is_set():
        try:
            context = _configure(args)
        except ConfigurationError:
            raise
        except BackendError as exc:
            complaint.say(f"could not reach the durable store: {exc}; retrying every {START_RETRY:g}s")
            stop.wait(START_RETRY)
            continue
        complaint.over("reached the durable store")
        return context
    return None


def _once(hybrids: Sequence[type[DataObject]], leader: Leader, stop: threading.Event,
          args: argparse.Namespace) -> int:
    lease = leader.acquire()
    if not lease.acquired:
        print(f"another refresher leads {leader.role} ({lease.holder}); nothing refreshed", file=sys.stderr)
        return EXIT_STANDBY
    try:
        ahead = args.look_ahead or 0.0  # a run from cron knows nothing of the next: stale now only
        outcome = refresh_pass(hybrids, args.batch_size, leader, stop, dict.fromkeys(hybrids, ahead))
        gave_up = leader.gave_up
    finally:
        leader.release()
    _print(outcome, args.limit)
    if outcome.interrupted:
        # not every hybrid was refreshed: stopped by a signal, the lead given up over a remote call
        # running past the TTL (a failure of this run: no other refresher need lead), or the lease
        # lost (another leads)
        if stop.is_set():
            return 130
        if gave_up:
            print(f"gave up the lead of {leader.role}: a remote call ran for over {leader.stuck_after:g}s; "
                  "the rest waits for the next run", file=sys.stderr)
            return 1
        return EXIT_STANDBY
    reports = outcome.reports.values()
    print(f"refreshed {len(outcome.reports)} of {len(hybrids)} mirrored hybrids: "
          f"{sum(report.total for report in reports)} stale objects, "
          f"{sum(report.refreshed for report in reports)} changed, "
          f"{sum(report.unchanged for report in reports)} unchanged, "
          f"{sum(len(report.failed) for report in reports)} failed", flush=True)
    return 1 if outcome.failed else 0


def _loop(hybrids: Sequence[type[DataObject]], leader: Leader, stop: threading.Event,
          args: argparse.Namespace) -> int:
    """Long because it is the whole life of a refresher: lead or stand by, refresh what is due, wait."""
    periodic = {cls: float(every) for cls in hybrids if (every := _mirror(cls).refresh_every)}
    for cls in hybrids:
        if cls not in periodic:
            say(f"{cls.__name__} declares no refresh_every: left to `dal refresh --once` and lazy refreshes")
    if not periodic:
        raise DalError("no mirrored hybrid declares refresh_every, so there is nothing to repeat; declare "
                       "Mirror(timeout, refresh_every=SECONDS) or run `dal refresh --once` (from cron, say)")
    due: dict[type[DataObject], float] = {}
    last_round = 0.0  # how long the last pass took: the next one takes about as long to come round
    standing_by = False
    unreachable = Complaint()  # said once while the store stays away, not at every retry
    try:
        while not stop.is_set():
            if not leader.held:
                if leader.lease is not None and not leader.gave_up:  # a give-up said so itself
                    say(f"lost the lead of {leader.role}: its lease could not be renewed")
                try:
                    lease = leader.acquire()
                except BackendError as exc:  # the store is away: keep trying, as a standby would
                    unreachable.say(f"could not reach the durable store to lead {leader.role}: {exc}; "
                                    f"retrying every {leader.retry:g}s")
                    stop.wait(leader.retry)
                    continue
                unreachable.over("reached the durable store")
                if not lease.acquired:
                    if not standing_by:
                        say(f"standby: {leader.role} is led by {lease.holder}; retrying every "
                             f"{leader.retry:g}s")
                        standing_by = True
                    stop.wait(leader.retry)
                    continue
                standing_by = False
                say(f"leading {leader.role} as {leader.owner} (lease of {lease.ttl:g}s)")
                due = dict.fromkeys(periodic, time.monotonic())  # a new leader refreshes at once
            now = time.monotonic()
            ready = [cls for cls in periodic if due[cls] <= now]
            if ready:
                for cls in ready:
                    due[cls] = now + periodic[cls]
                ahead = {cls: look_ahead(periodic[cls], last_round) if args.look_ahead is None
                         else args.look_ahead for cls in ready}
                outcome = refresh_pass(ready, args.batch_size, leader, stop, ahead)
                last_round = time.monotonic() - now
                _print(outcome, args.limit, stamp=True)
            # wake for the next due hybrid, a stop, or a look at the lease (a day at most: a longer
            # wait overflows, and the loop only comes round to wait again)
            stop.wait(max(0.0, min(min(due.values()) - time.monotonic(), leader.renew_every, MAX_WAIT)))
    finally:
        leader.release()
    say("stopped")
    return 0


def look_ahead(refresh_every: float, last_round: float) -> float:
    """Return how far ahead a loop's pass looks for objects to refresh, in seconds.

    The next pass starts ``refresh_every`` seconds after this one (later when the loop wakes
    late) and takes about as long as the last one (``last_round``) to reach an object: an object
    stale by then would be met stale by readers in between, so this pass refreshes it.
    """
    return refresh_every * (1 + LATE_SHARE) + last_round


def refresh_pass(hybrids: Sequence[type[DataObject]], batch_size: int, leader: Leader,
                 stop: threading.Event, ahead: Mapping[type[DataObject], float] | None = None) -> Outcome:
    """Refresh the due objects of ``hybrids`` while leading and not stopped; never raises for one hybrid.

    Due: stale ``ahead[cls]`` seconds from now (0 when not given: stale now). Before each hybrid and
    each batch the store is asked whether this process still leads (:meth:`Leader.leading`).
    """
    outcome = Outcome()
    for cls in hybrids:
        if stop.is_set() or not leader.leading():
            outcome.interrupted = True
            break
        name = cls.__name__
        seconds = (ahead or {}).get(cls, 0.0)
        try:
            guids = stale_guids(cls, seconds)
            with Progress(len(guids), f"refresh {name}") as bar, watched(leader.calling):
                report = refresh_stale(cls, batch_size=batch_size, progress=_progress(bar, leader, stop),
                                       guids=guids, ahead=seconds)
        except (_Interrupted, Abandoned):
            outcome.interrupted = True
            break
        except Exception as exc:  # a store failure, or a bug in the hybrid: the next hybrid still runs
            outcome.errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        outcome.reports[name] = report
    return outcome


class _Interrupted(Exception):
    """Raised between batches when the refresher was stopped or lost the lead."""


def _progress(bar: Progress, leader: Leader, stop: threading.Event) -> Callable[[int], None]:
    def advance(done: int) -> None:
        bar.advance(done - bar.done)  # refresh_stale counts the objects done so far
        if stop.is_set() or not leader.leading():
            raise _Interrupted
    return advance


def _print(outcome: Outcome, limit: int, *, stamp: bool = False) -> None:
    prefix = time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) if stamp else ""
    for name, report in outcome.reports.items():
        print(f"{prefix}{name}: {report.total} stale: {report.refreshed} changed, {report.unchanged} "
              f"unchanged, {len(report.failed)} failed", flush=True)
        failures = sorted(report.failed.items())
        shown = failures if limit == 0 else failures[:limit]
        for guid, error in shown:
            print(f"  failed {guid}: {error}", flush=True)
        if len(shown) < len(failures):
            print(f"  ... and {len(failures) - len(shown)} more (--limit 0 lists all)", flush=True)
    for name, error in outcome.errors.items():
        print(f"{prefix}{name}: not refreshed: {error}", flush=True)
    if outcome.interrupted:
        print(f"{prefix}interrupted: stopped, or no longer the leader; the rest waits for the next pass",
              flush=True)


def _mirror(cls: type[DataObject]) -> Any:
    return cls._meta.mirror
