"""What ``dal demo`` does, step by step, on the sample model; :mod:`dal.cli.demo` runs it.

Only the demo imports this module, and with it the sample model (:mod:`dal.hybrids`), so every
other command registers the --hybrids modules alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import dal
from dal.cli import sqlite_files
from dal.cli.demo_mirror import mirror
from dal.cli.demo_namespace import claim, finish, finish_quietly
from dal.cli.demo_report import Report, Sample, Since, error_of, names
from dal.cli.demo_tools import diagram, integrity, migration, queries, store_release_one_nodes
from dal.cli.output import sigterm_raises
from dal.hybrids import AlbaBackend, Backend, BackendStorageRouter, BackendType, Disk, Pool

DISKS_PER_NODE = 4
TIB = 1 << 40


def run_demo(args: argparse.Namespace, emit: Callable[[str], None]) -> dal.config.Context:
    """Run the demo, reporting through ``emit``; return the context it ran in."""
    # the default namespace of every command (configure's), so the commands a user tries next read
    # what the demo wrote; its marker keeps it from clearing anything it did not write
    context = dal.configure(args.persistent, args.volatile, namespace=args.namespace)
    # SIGTERM raises Terminated, so a stopped demo still marks its data finished (the next run
    # clears it); held while the marker is written, then delivered
    with sigterm_raises() as sigterm:
        sigterm.hold()
        claimed = claim(context)
        try:
            sigterm.release()
            _steps(args, context, emit)
        except BaseException:
            # what the run wrote up to here is the demo's too: the next run may clear it
            sigterm.hold()
            finish_quietly(context, claimed)
            raise
        sigterm.hold()
        finish(context, claimed)
    overall = {name: value for name, value in context.stats.snapshot().items() if "." not in name}
    emit("  cache     " + ", ".join(f"{name}={value:g}" for name, value in sorted(overall.items()))
         + "  (per dynamic: dal stats)")
    return context


def _steps(args: argparse.Namespace, context: dal.config.Context, emit: Callable[[str], None]) -> None:
    emit(f"dal demo: persistent {context.persistent_url}, volatile {context.volatile_url}, "
         f"namespace {context.namespace!r}")
    report = Report(emit)
    sample = _create(report, context, args.count)
    with report.step("nodes") as notes:
        sample.routers = store_release_one_nodes(context, notes)
    _relate(report, sample)
    _disks(report, sample)
    _load_merge_refuse(report, context, sample)
    queries(report, context, sample)
    with report.step("delete") as notes:
        # the first backend stays: its pools, nodes and plugin point at it
        gone = sample.backends[max(1, len(sample.backends) // 2):]
        for backend in gone:
            backend.delete()
        notes.append(f"{len(gone)} backends deleted, {len(dal.DataList(Backend))} left")
    migration(report, context)
    integrity(report, context, sample)
    mirror(report, context, args)
    # `dal stats --demo` runs this too; it parses no --erd and wants no file written
    erd_file = getattr(args, "erd", None)
    if erd_file:
        diagram(report, Path(erd_file), sqlite_files(context.persistent_url))


def _create(report: Report, context: dal.config.Context, count: int) -> Sample:
    with report.step("create") as notes:
        moved = Since(context)
        alba = BackendType(data={"name": "ALBA", "code": "alba", "has_plugin": True})
        ceph = BackendType(data={"name": "Ceph", "code": "ceph"})
        alba.save()
        ceph.save()
        backends = []
        for number in range(1, count + 1):
            backend = Backend(data={"name": f"backend{number}", "backend_type": alba if number % 2 else ceph})
            backend.save()
            backends.append(backend)
        saves = 2 + len(backends)
        records = len(context.persistent.scan(context.keys.schemas()))
        notes.append(f"2 backend types and {len(backends)} backends in {moved('commits')} transactions: "
                     f"{saves} saves (each one: document, unique and index keys together) and {records} "
                     "schema records (a hybrid's first save records its model)")
    return Sample(alba, ceph, backends)


def _relate(report: Report, sample: Sample) -> None:
    first, routers = sample.first, sample.routers
    with report.step("relate") as notes:
        for router in routers[:2]:
            BackendStorageRouter(data={"backend": first, "storagerouter": router,
                                       "is_master": router is routers[0]}).save()
        plugin = AlbaBackend(data={"backend": first, "scaling": "GLOBAL"})
        plugin.save()
        served = sorted(f"{link.storagerouter.name}{' (master)' if link.is_master else ''}"
                        for link in first.storagerouters if link.storagerouter is not None)
        notes.append(f"{first.name} served by {', '.join(served)} through a junction; "
                     f"one-to-one plugin {'found' if first.alba_backend == plugin else 'missing'}, "
                     f"linked_guid {'matches' if first.linked_guid == plugin.guid else 'differs'}")


def _disks(report: Report, sample: Sample) -> None:
    with report.step("disks") as notes:
        sample.pools = [Pool(data={"name": f"pool{n}", "backend": sample.first, "size": 10 * TIB,
                                   "state": "AVAILABLE"}) for n in (1, 2)]
        for pool in sample.pools:
            pool.save()
        for router in sample.routers:
            for _ in range(DISKS_PER_NODE):
                number = len(sample.disks) + 1
                disk = Disk(data={"name": f"disk{number}", "size": (1 + number % 3) * TIB,
                                  "serial": f"SN{number:05d}", "state": "ONLINE", "storagerouter": router,
                                  "pool": sample.pools[(number - 1) % len(sample.pools)]})
                disk.save()
                sample.disks.append(disk)
        source = sample.disks[0]
        # a clone has no serial of its own: an optional unique property may stay unset on many objects
        clone = Disk(data={"name": f"{source.name}-clone", "size": source.size, "parent": source,
                           "storagerouter": source.storagerouter})
        clone.save()
        node = sample.routers[0]
        capacity = node.capacity
        notes.append(f"{len(sample.pools)} pools of {sample.first.name}, {len(sample.disks)} disks on "
                     f"{len(sample.routers)} nodes; {source.name}.clones = [{names(source.clones)}] "
                     f"(self relation parent); {node.name}.capacity: {capacity['disks']} disks, "
                     f"{capacity['online']} online")


def _load_merge_refuse(report: Report, context: dal.config.Context, sample: Sample) -> None:
    first, alba = sample.first, sample.alba
    with report.step("load") as notes:
        moved = Since(context)
        again = [Backend(first.guid), Backend(first.guid)][-1]
        notes.append(f"{again.name!r} twice: {moved('object_misses')} cache miss, "
                     f"{moved('object_hits')} cache hit; "
                     f"type {again.backend_type.name if again.backend_type else None}")

    with report.step("merge") as notes:
        mine, theirs = Backend(first.guid), Backend(first.guid)
        mine.status = "RUNNING"
        theirs.tags = ["gold"]
        theirs.save()
        mine.save()
        merged = Backend(first.guid)
        notes.append(f"two copies changed different fields concurrently -> status={merged.status}, "
                     f"tags={merged.tags}")

    with report.step("refuse") as notes:
        duplicate = Backend(data={"name": first.name, "backend_type": alba})
        notes.append(error_of(duplicate.save))
        notes.append(error_of(Backend().save))
        notes.append(error_of(alba.delete))

    with report.step("dynamic") as notes:
        running = Backend(first.guid)
        moved = Since(context)
        values = [running.available for _ in range(3)]
        notes.append(f"{running.name}.available = {values[0]} read 3 times: {moved('dynamic_misses')} "
                     f"computed (it reads its plugin's own dynamic), {moved('dynamic_hits')} from cache")
