"""Write the objects of a namespace as JSON, to stdout or to a file (``-o``).

The dump holds every object's stored document (relations as ``<relation>_guid``), ordered
by hybrid name, then guid, so two dumps of the same data are identical. Documents are read
in batches and written as they come; on a store others write to meanwhile, each document
is as it was when its batch was read. ``dal load`` reads it back.
"""

from __future__ import annotations

import argparse
import sys

import dal
from dal.cli import existing_store, shown_store, sqlite_files, unpublished
from dal.cli.load import add_only_option, selected
from dal.cli.output import Terminated, write_file
from dal.tools.transfer.dump import dump

HELP = "write the objects of a namespace as JSON (stdout, or -o FILE)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of stdout; it appears only once complete")
    add_only_option(parser, "dump only these hybrids")


def run(args: argparse.Namespace) -> int:
    context = unpublished(dal.configure(existing_store(args.persistent), args.volatile,
                                        namespace=args.namespace))
    only = selected(args)
    if args.output is None:
        counts = dump(context, sys.stdout, only)
        sys.stdout.flush()
        where = "stdout"
    else:
        try:
            # never over the database read: the rename would replace it, and every namespace in it
            counts = write_file(args.output, lambda stream: dump(context, stream, only),
                                databases=sqlite_files(context.persistent_url))
        except Terminated as exc:
            print(f"error: terminated; {args.output} not written", file=sys.stderr)
            return 128 + exc.signum
        where = args.output
    total = sum(counts.values())
    print(f"dumped {total} objects of {len(counts)} hybrids from namespace {context.namespace!r} of "
          f"{shown_store(context.persistent_url)} to {where}", file=sys.stderr)
    return 0
