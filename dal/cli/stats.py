"""Print cache and dynamic statistics: hits, misses, computations, lock waits, compute time.

Every process on a shared volatile store (memcached) publishes its counters there, so this
shows their sum, with this process's own counters added in memory: it publishes none, so a
monitor that runs it often does not count its own past runs. A process-local store
(``memory://``, the default) holds only the numbers of the process that asks: ``--demo`` runs the
demo first, in this process, to show them (``--count N`` sizes that demo, and is refused without it).
"""

from __future__ import annotations

import argparse
from typing import Any

import dal
from dal.cache.stats import Published, collect, report
from dal.cli import demo, existing_store, shown_store, unpublished
from dal.exceptions import DalError

HELP = "print cache and dynamic statistics"
#: the backends a ``--demo`` run creates unless ``--count`` says
DEMO_COUNT = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true",
                        help="run the demo quietly first, in this process, and show its statistics")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help=f"backends the --demo run creates (default {DEMO_COUNT}; only with --demo)")


def uses_hybrids(args: argparse.Namespace) -> bool:
    """``--demo`` runs the sample model alone, as ``dal demo`` does: --hybrids is not imported then."""
    return not args.demo


def run(args: argparse.Namespace) -> int:
    if args.count is not None and not args.demo:  # it would change nothing: say so, not ignore it
        raise DalError(f"--count {args.count} sizes the demo that --demo runs first; add --demo, or drop "
                       "--count to show the statistics of the stores as they are")
    if args.demo:
        args.count = DEMO_COUNT if args.count is None else args.count
        context = demo.run_demo(args, emit=lambda line: None)
    else:
        context = dal.configure(existing_store(args.persistent), args.volatile, namespace=args.namespace)
    entries: list[Any] | None = None
    if context.volatile.shared:
        unpublished(context)  # this run's numbers are shown, not left behind for a day
        published = collect(context, reader=True)
    else:
        own = context.stats.snapshot()
        published = Published(processes=[{"counters": own}], totals=own)
        entries = context.volatile.entries() if hasattr(context.volatile, "entries") else None
    for line in report(context, published, entries, persistent=shown_store(context.persistent_url)):
        print(line)
    if not context.volatile.shared and not args.demo:
        print("  (the volatile store is process-local: these are this process's numbers only; "
              "try `dal stats --demo`, or a memcached:// store shared by your processes)")
    return 0
