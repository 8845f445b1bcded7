"""Build the sample model, exercise it, and print a short report.

Runs on the embedded default (SQLite file + process memory) unless stores are named, in the
namespace every other command reads by default (``dal`` unless ``--namespace`` or
``DAL_NAMESPACE`` names another), so ``dal check``, ``dal dump`` and the other commands run after it
see its data. That namespace is cleared first, so the demo can be run again and again; it
refuses to clear a namespace holding data it did not write. It saves, relates and loads
objects, reads dynamics, queries, migrates nodes an older release of the model stored, checks
the namespace, mirrors virtual machines from a remote API it serves itself on loopback (counting
the remote calls: none to build or list them, one for a lazy refresh, one bulk call for a list),
runs ``dal refresh --once``, and draws the model's diagram into ``erd.svg`` (with ``--erd FILE`` elsewhere).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import dal
from dal.backends.base import DeletePrefix, Put
from dal.backends.paging import scan_batches
from dal.cache.versions import changed_versions
from dal.cli.demo_mirror import mirror
from dal.cli.demo_report import Report, Sample, Since, error_of, names
from dal.cli.demo_tools import diagram, integrity, migration, queries, store_release_one_nodes
from dal.hybrids import AlbaBackend, Backend, BackendStorageRouter, BackendType, Disk, Pool
from dal.model.registry import hybrids
from dal.objects import schema
from dal.objects.transaction import decode

HELP = "run the demo on the sample model and print a report"
#: the key that marks a namespace as the demo's own, which it may clear
MARKER = "demo-namespace"
DISKS_PER_NODE = 4
TIB = 1 << 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=20, help="backends to create (default 20)")
    parser.add_argument("--erd", metavar="FILE", default="erd.svg",
                        help="file to draw the sample model's diagram in, with Graphviz (default erd.svg; "
                             "'' draws none)")


def run(args: argparse.Namespace) -> int:
    run_demo(args, print)
    return 0


def run_demo(args: argparse.Namespace, emit: Callable[[str], None]) -> dal.config.Context:
    """Run the demo, reporting through ``emit``; return the context it ran in."""
    if args.count < 1:
        raise dal.exceptions.DalError("--count must be at least 1")
    # the default namespace of every command (configure's), so the commands a user tries next read
    # what the demo wrote; its marker keeps it from clearing anything it did not write
    context = dal.configure(args.persistent, args.volatile, namespace=args.namespace)
    _reset(context)
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
        diagram(report, Path(erd_file))
    overall = {name: value for name, value in context.stats.snapshot().items() if "." not in name}
    emit("  cache     " + ", ".join(f"{name}={value:g}" for name, value in sorted(overall.items()))
         + "  (per dynamic: dal stats)")
    return context


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


def _reset(context: dal.config.Context) -> None:
    """Empty the demo's namespace, unless it holds data some other program wrote."""
    marker = f"{context.keys.root}{MARKER}"
    present = context.persistent.scan(context.keys.root, limit=1)
    if present and context.persistent.get(marker) is None:
        raise dal.exceptions.DalError(
            f"namespace {context.namespace!r} in {context.persistent_url} holds data the demo did not "
            "write; run the demo in another namespace with --namespace NAME (and give the other commands "
            "the same --namespace to read it)")
    cached = _cache_keys_of_documents(context)
    context.persistent.commit([], [DeletePrefix(context.keys.root), Put(marker, b"")])
    # a shared cache (memcached) outlives the previous run: drop what it held about the objects
    # just removed, as their deletes would have, so no cached result of that run is served now
    context.invalidate(*cached)
    schema.forget(context)


def _cache_keys_of_documents(context: dal.config.Context) -> list[str]:
    """Return the cache keys a delete of every stored object of the namespace would invalidate."""
    keys = context.keys
    prefix = f"{keys.root}o/"
    cached: list[str] = []
    for batch in scan_batches(context.persistent, prefix):
        for key, entry in batch:
            hybrid, _, guid = key[len(prefix):].partition("/")
            cached.append(keys.cached_doc(hybrid, guid))
            try:
                meta = hybrids.get(hybrid)._meta
                document = decode(entry.value)
            except (LookupError, ValueError):
                continue  # not the sample model's, or unreadable: only its cached copy can be known
            cached += [keys.cached_dynamic(hybrid, guid, name) for name in meta.dynamics]
            cached += changed_versions(keys, meta, guid, document, None)
    return cached
