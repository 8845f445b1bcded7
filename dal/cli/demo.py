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
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import dal
from dal.cli import sqlite_files
from dal.cli.output import Terminated, refuse_target
from dal.exceptions import DalError

HELP = "run the demo on the sample model and print a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=20, help="backends to create (default 20)")
    parser.add_argument("--erd", metavar="FILE", default="erd.svg",
                        help="file to draw the sample model's diagram in, with Graphviz (default erd.svg; "
                             "'' draws none)")


def uses_hybrids(args: argparse.Namespace) -> bool:
    """The demo runs the sample model alone: the --hybrids modules are not imported (see dal.cli._run)."""
    return False


def run(args: argparse.Namespace) -> int:
    run_demo(args, print)
    return 0


def run_demo(args: argparse.Namespace, emit: Callable[[str], None]) -> dal.config.Context:
    """Run the demo, reporting through ``emit``; return the context it ran in."""
    if args.count < 1:
        raise DalError("--count must be at least 1")
    # `dal stats --demo` runs this too; it parses no --erd and wants no file written
    erd_file = getattr(args, "erd", None)
    if erd_file:
        writable(Path(erd_file), sqlite_files(args.persistent))
    # the sample model is imported here only, where the demo runs: every other command registers
    # the --hybrids modules alone, whose hybrids may be named like the sample's (Disk, Pool, ...)
    from dal.cli import demo_run

    try:
        return demo_run.run_demo(args, emit)
    except Terminated as exc:
        print("error: terminated; the demo stopped, its data so far marked as its own (the next "
              "dal demo clears it)", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from exc


def writable(path: Path, databases: Sequence[str] = ()) -> None:
    """Refuse, before the demo starts, a diagram file it could not write at its end, or would write over
    one of the SQLite ``databases`` (the store it runs on)."""
    shown = str(path)
    refuse_target(shown, databases)
    try:
        found = _status(path)
        if found is not None and stat.S_ISDIR(found.st_mode):
            raise DalError(f"--erd {shown!r} is a directory; name a file (or '' to draw none)")
        folder = path.parent
        if found is None and _status(folder) is None:
            raise DalError(f"--erd {shown!r}: the directory {str(folder)!r} does not exist; create it, "
                           "or name a file elsewhere (or '' to draw none)")
    except OSError as exc:  # not a directory on the way, a name too long, no permission to look
        raise DalError(f"cannot write --erd {shown!r}: {exc.strerror or exc}; name another file "
                       "(or '' to draw none)") from exc
    if not os.access(path if found is not None else folder, os.W_OK):
        raise DalError(f"--erd {shown!r} is not writable; name another file (or '' to draw none)")


def _status(path: Path) -> os.stat_result | None:
    """Return the status of ``path`` (links followed), None if it does not exist."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
