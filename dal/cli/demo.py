"""Build the sample model, exercise it, and print a short report.

Runs on the embedded default (SQLite file + process memory) unless stores are named. It
works in its own namespace (``demo`` unless ``--namespace`` or ``DAL_NAMESPACE`` names another),
cleared first so it can be run again and again; it refuses to clear a namespace holding data
it did not write.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dal
from dal.backends.base import DeletePrefix, Put
from dal.exceptions import LinkedObjectError, MissingMandatoryFieldsError, UniqueConstraintError
from dal.hybrids import AlbaBackend, Backend, BackendStorageRouter, BackendType, StorageRouter

T = TypeVar("T")
HELP = "run the demo on the sample model and print a report"
#: the key that marks a namespace as the demo's own, which it may clear
MARKER = "demo-namespace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=20, help="backends to create (default 20)")


class Report:
    """Collect one line per step, with its duration."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit

    @contextmanager
    def step(self, label: str) -> Iterator[list[str]]:
        notes: list[str] = []
        started = time.perf_counter()
        yield notes
        elapsed = (time.perf_counter() - started) * 1000
        self.emit(f"  {label:<9} {'; '.join(notes)}  [{elapsed:.1f} ms]")


def run(args: argparse.Namespace, emit: Callable[[str], None] = print) -> int:
    run_demo(args, emit)
    return 0


def run_demo(args: argparse.Namespace, emit: Callable[[str], None]) -> dal.config.Context:
    """Run the demo, reporting through ``emit``; return the context it ran in."""
    if args.count < 1:
        raise dal.exceptions.DalError("--count must be at least 1")
    namespace = args.namespace or os.environ.get("DAL_NAMESPACE") or "demo"
    context = dal.configure(args.persistent, args.volatile, namespace=namespace)
    _reset(context)
    emit(f"dal demo: persistent {context.persistent_url}, volatile {context.volatile_url}, "
         f"namespace {context.namespace!r}")
    report = Report(emit)

    with report.step("create") as notes:
        alba = BackendType(data={"name": "ALBA", "code": "alba", "has_plugin": True})
        ceph = BackendType(data={"name": "Ceph", "code": "ceph"})
        alba.save()
        ceph.save()
        backends = []
        for number in range(1, args.count + 1):
            backend = Backend(data={"name": f"backend{number}", "backend_type": alba if number % 2 else ceph})
            backend.save()
            backends.append(backend)
        notes.append(f"2 backend types and {len(backends)} backends in "
                     f"{context.stats['commits']} transactions "
                     "(one per save: document, unique and index keys together)")

    first = backends[0]
    with report.step("relate") as notes:
        routers = [StorageRouter(data={"name": f"node{n}", "ip": f"10.0.0.{n}"}) for n in (1, 2, 3)]
        for router in routers:
            router.save()
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

    with report.step("load") as notes:
        again, counted = _counting(context, lambda: [Backend(first.guid), Backend(first.guid)][-1])
        notes.append(f"{again.name!r} twice: {counted('object_misses')} cache miss, "
                     f"{counted('object_hits')} cache hit; "
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
        notes.append(_error_of(duplicate.save))
        notes.append(_error_of(Backend().save))
        notes.append(_error_of(alba.delete))

    with report.step("dynamic") as notes:
        running = Backend(first.guid)
        values, counted = _counting(context, lambda: [running.available for _ in range(3)])
        notes.append(f"{running.name}.available = {values[0]} read 3 times: {counted('dynamic_misses')} "
                     f"computed (it reads its plugin's own dynamic), {counted('dynamic_hits')} from cache")

    with report.step("query") as notes:
        rows = dal.DataList(Backend, {"type": dal.DataList.where_operator.AND,
                                      "items": [("status", dal.DataList.operator.EQUALS, "RUNNING")]})
        notes.append(f"{len(rows)} of {len(dal.DataList(Backend))} backends are RUNNING")

    with report.step("delete") as notes:
        gone = backends[len(backends) // 2:]
        for backend in gone:
            backend.delete()
        notes.append(f"{len(gone)} backends deleted, {len(dal.DataList(Backend))} left")

    stats = context.stats.snapshot()
    overall = {name: value for name, value in stats.items() if "." not in name}
    emit("  cache     " + ", ".join(f"{name}={value:g}" for name, value in sorted(overall.items()))
         + "  (per dynamic: dal stats)")
    return context


def _reset(context: dal.config.Context) -> None:
    """Empty the demo's namespace, unless it holds data some other program wrote."""
    marker = f"{context.keys.root}{MARKER}"
    present = context.persistent.scan(context.keys.root, limit=1)
    if present and context.persistent.get(marker) is None:
        raise dal.exceptions.DalError(
            f"namespace {context.namespace!r} in {context.persistent_url} holds data the demo did not "
            "write; run the demo in another namespace with --namespace NAME")
    context.persistent.commit([], [DeletePrefix(context.keys.root), Put(marker, b"")])


def _counting(context: dal.config.Context, action: Callable[[], T]) -> tuple[T, Callable[[str], int]]:
    """Run ``action``; return its result and how much each counter moved meanwhile."""
    before = context.stats.snapshot()
    result = action()
    after = context.stats.snapshot()
    return result, lambda event: int(after.get(event, 0) - before.get(event, 0))


def _error_of(action: Callable[[], Any]) -> str:
    try:
        action()
    except (UniqueConstraintError, MissingMandatoryFieldsError, LinkedObjectError) as exc:
        return f"{type(exc).__name__}: {str(exc).split(';')[0]}"
    raise AssertionError("the demo expected this save to be refused")
