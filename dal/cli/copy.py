"""Copy every object of a namespace from one store to another, then verify the counts per hybrid.

This is how a dataset moves when it outgrows its store::

    dal copy sqlite:///dal.sqlite3 etcd://127.0.0.1:2379

It is ``dal dump`` fed to ``dal load``: each document is re-validated against the model and
its unique keys, index entries and links are rebuilt by the destination's own commits, in
atomic batches; nothing is copied as raw keys. The source is only read. ``--namespace``
names the source namespace, ``--to-namespace`` the destination's (default: the same);
``--volatile`` is the destination's cache (replaced objects are invalidated there);
``--persistent`` is not used. Exit 1 when the counts differ after the copy; interrupted
(Ctrl-C), exit 130 printing the ``dal copy ... --replace`` that finishes it.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys

import dal
from dal.backends.url import StoreURL
from dal.cli import existing_store, lasting_store, shown_store, unpublished
from dal.cli.load import (
    add_batch_options,
    add_only_option,
    check_batches,
    has_password,
    selected,
    selection_words,
)
from dal.cli.progress import Progress
from dal.config import DEFAULT_VOLATILE, Context
from dal.tools.transfer.load import LoadInterrupted, copy

HELP = "copy a namespace from one store to another (SRC_URL DST_URL) and verify the counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC_URL", help="the store to read, e.g. sqlite:///dal.sqlite3")
    parser.add_argument("destination", metavar="DST_URL", help="the store to write, e.g. etcd://127.0.0.1:2379")
    parser.add_argument("--to-namespace", metavar="NAME",
                        help="the destination namespace (default: the source's, --namespace)")
    parser.add_argument("--replace", action="store_true",
                        help="write into a destination namespace that is not empty, overwriting objects with "
                             "the same guid (default: refuse a non-empty destination)")
    add_only_option(parser, "copy only these hybrids")
    add_batch_options(parser)


def run(args: argparse.Namespace) -> int:
    # refused before the destination is opened: a refused copy creates no destination SQLite file
    check_batches(args)
    only = selected(args)
    source = dal.configure(existing_store(args.source), "memory://", namespace=args.namespace)
    # the destination is configured last, so it is the current context while writing
    destination = unpublished(dal.configure(lasting_store(args.destination, "copy"), args.volatile,
                                            namespace=(args.to_namespace if args.to_namespace is not None
                                                       else source.namespace)))
    print(f"copying namespace {source.namespace!r} of {shown_store(source.persistent_url)} to namespace "
          f"{destination.namespace!r} of {destination.persistent_url}")
    try:
        with contextlib.ExitStack() as stack:
            result = copy(source, destination, only=only, replace=args.replace,
                          batch_size=args.batch_size, max_ops=args.max_txn_ops,
                          source_name=shown_store(source.persistent_url),
                          progress=lambda total: stack.enter_context(Progress(total, "copy")).advance)
    except KeyboardInterrupt as stopped:
        # a LoadInterrupted's own advice names `dal load`; outside the batches (before the first, when
        # schema records may be written, or while verifying after the last) the same copy finishes it
        print(f"error: interrupted: {stopped.summary}" if isinstance(stopped, LoadInterrupted)
              else "error: interrupted outside the copy's batches", file=sys.stderr)
        print(finishing(args, source, destination), file=sys.stderr)
        return 130
    print(f"wrote {result.load.total} objects in {result.load.batches} "
          f"commit{'' if result.load.batches == 1 else 's'}")
    width = max([len("hybrid"), *(len(name) for name in result.source)])
    print(f"  {'hybrid':<{width}}  {'source':>8}  {'destination':>11}")
    for name in sorted(result.source):
        source_count, destination_count = result.source[name], result.destination.get(name, 0)
        if source_count or destination_count:
            flag = "" if source_count == destination_count else "  MISMATCH"
            print(f"  {name:<{width}}  {source_count:>8}  {destination_count:>11}{flag}")
    mismatches = result.mismatches
    if mismatches:
        listed = ", ".join(f"{name} (source {a}, destination {b})" for name, (a, b) in mismatches.items())
        print(f"verification failed: the destination holds other counts than the source: {listed}; objects "
              "only the destination held before (kept by --replace) or written by others meanwhile explain "
              "a surplus; copy into an empty namespace for an exact copy")
        return 1
    print("verified: the destination holds as many objects of each hybrid as the source")
    return 0


def finishing(args: argparse.Namespace, source: Context, destination: Context) -> str:
    """Return the advice that finishes an interrupted copy: this copy again, with ``--replace``.

    Every setting that differs from the built-in default is spelled out, so the command means
    the same in another shell (as ``dal load`` does).
    """
    urls: list[StoreURL] = [shown_store(source.persistent_url), destination.persistent_url]
    words = ["dal", "copy", str(urls[0]), str(urls[1]), "--replace"]
    if source.namespace != "dal":
        words += ["--namespace", source.namespace]
    if destination.namespace != source.namespace:
        words += ["--to-namespace", destination.namespace]
    if destination.volatile_url.settings() != DEFAULT_VOLATILE:
        words += ["--volatile", str(destination.volatile_url)]
        urls.append(destination.volatile_url)
    words += selection_words(args)
    text = f"finish the copy with: {shlex.join(words)}"
    if any(has_password(url) for url in urls):
        text += " (with the password in place of ***)"
    return text
