"""The mirror steps of ``dal demo``: virtual machines kept in sync with a slow remote API.

The demo serves the remote itself (:mod:`dal.cli.demo_remote`, on loopback, in a thread) and
counts on the remote's side every call it answers, so each claim printed is measured: building,
listing and querying mirrored objects make no call; a stale object read twice makes one; a
list of stale objects is refreshed with one bulk call; a remote that is down leaves the stored
data served, with the error recorded; and ``dal refresh --once``, run as another process on the
same stores, refreshes what is stale with one bulk call and prints its summary.
"""

from __future__ import annotations

import argparse
import re
import secrets
import subprocess
import sys
from collections import Counter

import dal.mirror
from dal.cli.demo_remote import BULK, INSTANCE, DemoRemote
from dal.cli.demo_report import Report
from dal.cli.demo_tools import where
from dal.config import Context
from dal.exceptions import MirrorError
from dal.hybrids import Cluster, VirtualMachine
from dal.query.datalist import DataList
from dal.query.grammar import Operator

#: virtual machines the remote knows at first, and those it gains before the bulk refresher runs
MACHINES = 6
LATER = 3
#: how long a refreshed virtual machine stays fresh
TIMEOUT = VirtualMachine._meta.mirror.timeout if VirtualMachine._meta.mirror else 0.0
#: seconds `dal refresh --once` may take before the demo gives up on it
REFRESHER_TIMEOUT = 120
#: the last lines of its stderr the demo shows when `dal refresh --once` failed
STDERR_LINES = 5
#: a line of its progress bar (dal.cli.progress.Progress, drawn on a pipe): `label [###---] 3/9 (33%)`
PROGRESS_LINE = re.compile(r".* \[[#-]+\] \d+/\d+ \(\d+%\)")


class Calls:
    """How many calls the remote answered, by endpoint, since this was made."""

    def __init__(self, remote: DemoRemote) -> None:
        self.remote = remote
        self.before = Counter(remote.calls)

    def __call__(self, endpoint: str) -> int:
        return self.remote.calls[endpoint] - self.before[endpoint]

    def __str__(self) -> str:
        return f"remote calls: {self(INSTANCE)} single, {self(BULK)} bulk"


def mirror(report: Report, context: Context, args: argparse.Namespace) -> None:
    """Run the mirror steps against a remote served for them, stopped when they are done."""
    # credentials only this run knows: the client cache keys them by HMAC, never in clear
    with DemoRemote(username="demo", password=secrets.token_urlsafe(12)) as remote:
        for number in range(1, MACHINES + 1):
            remote.add(f"vm{number}", memory=256 * number)
        cluster, guids = _build(report, remote)
        _lazy(report, remote, guids[0])
        _bulk(report, remote)
        _failure(report, remote, guids[1])
        _refresher(report, context, args, remote, cluster)


def _build(report: Report, remote: DemoRemote) -> tuple[Cluster, list[str]]:
    """Save a cluster and its virtual machines; return the cluster and their guids."""
    with report.step("mirror") as notes:
        calls = Calls(remote)
        cluster = Cluster(data={"name": "cluster1", **remote.settings()})
        cluster.save()
        machines = [VirtualMachine(data={"hostname": f"vm{number}", "cluster": cluster, "owner": "team-a"})
                    for number in range(1, MACHINES + 1)]
        for machine in machines:
            machine.save()
        listed = DataList(VirtualMachine)
        stale = sum(1 for machine in listed if machine.stale)
        running = len(DataList(VirtualMachine, where(("status", Operator.EQUALS, "running"))))
        notes.append(f"{len(machines)} virtual machines of {cluster.name} saved, listed ({len(listed)}) and "
                     f"queried (status running: {running}): {calls}; {stale} stale (never refreshed)")
    # the steps that follow load them afresh by guid, as another request would
    return cluster, [str(machine.guid) for machine in machines]


def _lazy(report: Report, remote: DemoRemote, guid: str) -> None:
    with report.step("lazy") as notes:
        calls = Calls(remote)
        machine = VirtualMachine(guid)
        with dal.mirror.frozen():
            name, frozen = machine.hostname, machine.status
            during = str(calls)
        notes.append(f"{name}.status under dal.mirror.frozen(): {frozen!r}, the stored data ({during})")
        calls = Calls(remote)
        values = [machine.status, machine.status]
        notes.line(f"{name}.status read twice: {values[0]!r} {values[1]!r}, ram {machine.ram}: one lazy "
                   f"refresh ({calls}), then stale={machine.stale}")
        calls = Calls(remote)
        again = VirtualMachine(guid)
        notes.line(f"another copy of {name}: status {again.status!r}, fresh for {TIMEOUT:g} s ({calls})")


def _bulk(report: Report, remote: DemoRemote) -> None:
    with report.step("bulk") as notes:
        calls = Calls(remote)
        listed = DataList(VirtualMachine)
        stale = sum(1 for machine in listed if machine.stale)
        statuses = Counter(str(machine.status) for machine in listed)
        shown = ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        notes.append(f"{stale} stale of {len(listed)} listed, then read ({shown}): {calls}")
        calls = Calls(remote)
        running = DataList(VirtualMachine, where(("status", Operator.EQUALS, "running")))
        how = running.explain().steps[0].how
        notes.line(f"status EQUALS 'running' -> {len(running)} ({how}; parsed from the answers): {calls}")


def _failure(report: Report, remote: DemoRemote, guid: str) -> None:
    with report.step("failure") as notes:
        pending = VirtualMachine(guid)
        with dal.mirror.frozen():  # a job is started on the remote: no need to ask it before
            name = pending.hostname
        pending.ignore_cache = True  # while the job runs, every read refreshes
        pending.save()
        # the job changes a field without moving the instance's mtime (GWM's cache missed those)
        remote.change(name, status="ADMIN_down", touch_mtime=False)
        remote.failing = True
        calls = Calls(remote)
        machine = VirtualMachine(guid)
        status, cached_at, info = machine.status, machine.cached_at, machine.info or {}
        notes.append(f"{name}.ignore_cache set (a job pending), remote down: {name}.status {status!r} served "
                     f"from the store, error {machine.error!r}: {calls}")
        calls = Calls(remote)
        try:
            machine.refresh_info()
            forced = "refresh_info() did not fail"
        except MirrorError as exc:
            forced = f"refresh_info() raises MirrorError from {type(exc.__cause__).__name__}"
        notes.line(f"{forced} ({calls}); cached_at {'kept' if machine.cached_at == cached_at else 'moved'}")
        remote.failing = False
        calls = Calls(remote)
        machine = VirtualMachine(guid)
        mtime = "unchanged" if (machine.info or {}).get("mtime") == info.get("mtime") else "moved"
        notes.line(f"remote back, next read retries: status {machine.status!r} (mtime {mtime}: answers are "
                   f"compared whole), error {machine.error!r}, owner {machine.owner!r} kept: {calls}")
        machine.ignore_cache = False  # the job is done
        machine.save()


def _refresher(report: Report, context: Context, args: argparse.Namespace, remote: DemoRemote,
               cluster: Cluster) -> None:
    with report.step("refresher") as notes:
        for number in range(MACHINES + 1, MACHINES + LATER + 1):
            remote.add(f"vm{number}", status="ADMIN_down", memory=1024)
            VirtualMachine(data={"hostname": f"vm{number}", "cluster": cluster}).save()
        before = dal.mirror.stale_count(VirtualMachine)
        calls = Calls(remote)
        exit_code, summary, where_run = _run_refresher(context, args)
        notes.append(f"{before} stale; `dal refresh --once` ({where_run}): exit {exit_code}, {calls}; "
                     f"{dal.mirror.stale_count(VirtualMachine)} stale left")
        for line in summary:
            notes.line(f"| {line}")


def _run_refresher(context: Context, args: argparse.Namespace) -> tuple[int, list[str], str]:
    """Run ``dal refresh --once`` on the demo's stores; return its exit code, its output and where it ran.

    Another process when the durable store is shared (a SQLite file, etcd), as a cron job or a
    service would run it; in this process when it is not (``memory://`` lives in this process
    only, as ``fakeredis://``), through the same command function.
    """
    stores = ["--namespace", context.namespace, "--hybrids", "dal.hybrids"]
    if args.persistent:
        stores += ["--persistent", args.persistent]
    if args.volatile:
        stores += ["--volatile", args.volatile]
    if context.persistent.shared:
        command = [sys.executable, "-m", "dal", "refresh", "--once", *stores]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=REFRESHER_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            return -1, [f"did not finish in {REFRESHER_TIMEOUT} s"], "another process"
        output = done.stdout.splitlines() + said(done.returncode, done.stderr)
        return done.returncode, output, "another process"
    found = dal.mirror.refresh_stale(VirtualMachine)
    summary = [f"{VirtualMachine.__name__}: {found.total} stale: {found.refreshed} changed, "
               f"{found.unchanged} unchanged, {len(found.failed)} failed (dal.mirror.refresh_stale, what the "
               "command runs)"]
    where = f"in this process: {context.persistent.scheme}:// is not shared"
    return (1 if found.failed else 0), summary, where


def said(exit_code: int, stderr: str) -> list[str]:
    """Return what the refresher's stderr tells: its progress bar left out, the lines naming an error,
    or, when it failed, its last lines, which say why (a traceback ends with ``XxxError: ...``)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.fullmatch(line)]
    if exit_code == 0:
        return [line for line in lines if "error" in line.lower()]
    return lines[-STDERR_LINES:]
