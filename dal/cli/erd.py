"""Draw the entity-relationship diagram of the hybrids that --hybrids names.

Text formats (mermaid, dot) go to stdout unless -o names a file; pictures (svg, png) are
drawn by Graphviz's `dot` and go to erd.svg / erd.png unless -o names another file (`-o -`
writes any format to stdout). Without --format, the format follows the -o suffix (.mmd,
.mermaid, .dot, .gv, .svg, .png), else mermaid. Only the hybrids declared in (or exported by)
the --hybrids modules are drawn; no store is opened, but -o never names the SQLite database of the
--persistent store (nor its -wal, -journal, -shm files), nor an empty name.
"""

from __future__ import annotations

import argparse
import sys

from dal.cli import sqlite_files
from dal.cli.output import Terminated, refuse_target, write_bytes
from dal.exceptions import DalError
from dal.tools import erd

HELP = "draw the entity-relationship diagram of the hybrids (mermaid, dot, svg, png)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=erd.FORMATS, default=None,
                        help="output format (default: from the -o suffix, else mermaid)")
    parser.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="write here ('-' for stdout; default: stdout for mermaid and dot, "
                             "erd.svg / erd.png for pictures)")
    parser.add_argument("--only", metavar="NAME[,NAME]", default=None,
                        help="draw only these hybrids (class or logical names; a class name several "
                             "hybrids share is refused); their relations' targets appear as bare boxes")
    parser.add_argument("--dot", metavar="PROGRAM", default="dot",
                        help="Graphviz program that draws svg and png (default: dot, found on PATH)")


def run(args: argparse.Namespace) -> int:
    # no store is opened, but the one --persistent names (a SQLite file) is never written over
    databases = sqlite_files(args.persistent)
    if args.output not in (None, "-"):
        refuse_target(args.output, databases)  # before drawing: an empty -o, the store's database
    fmt = args.format or (erd.format_for(args.output) if args.output not in (None, "-") else "mermaid")
    hybrids = erd.hybrids_in(args.hybrids.split(","))
    if not hybrids:
        raise DalError(f"the modules {args.hybrids!r} declare no hybrids; name the ones that do with "
                       "--hybrids MODULE[,MODULE]")
    if args.only is not None:
        hybrids = erd.select(hybrids, args.only.split(","))
    drawn = erd.render(hybrids, fmt, program=args.dot)
    data = drawn.encode() if isinstance(drawn, str) else drawn
    output = args.output if args.output is not None else (f"erd.{fmt}" if fmt in ("svg", "png") else "-")
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        # whole or not at all: a failed write leaves the old diagram as it was
        write_bytes(output, data, databases=databases)
    except Terminated as exc:
        print(f"error: terminated; {output} not written", file=sys.stderr)
        return 128 + exc.signum
    print(f"wrote {output} ({fmt}, {len(hybrids)} hybrids)")
    return 0
