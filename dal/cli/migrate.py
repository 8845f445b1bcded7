"""Bring the stored data up to the declared model.

Runs the numbered migration steps the --hybrids modules declare (each exactly once), fills
defaults of new properties into stored documents, builds the index and unique keys of
properties that became indexed or unique, and removes keys the model no longer declares.
Safe beside running processes that already run the new model; an interrupted run resumes
when started again. Exit status: 0 done (or up to date), 1 some unique constraint could not
be built because stored objects share a value (they are listed), 2 error, 141 the reader of its
output went away (it stopped there: run it again to finish).
"""

from __future__ import annotations

import argparse

import dal
from dal.cli import existing_store, lasting_store, unpublished
from dal.cli.progress import Progress
from dal.exceptions import DalError
from dal.model.registry import hybrids
from dal.tools.migrate.migrator import migrate

HELP = "bring stored data up to the declared model (defaults, index and unique keys, migration steps)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would change, per hybrid, and write nothing")


def run(args: argparse.Namespace) -> int:
    if not hybrids.all():  # nothing to migrate would read as "up to date", as if a model had been checked
        raise DalError(f"the modules {args.hybrids!r} declare no hybrids; name the ones that do with "
                       "--hybrids MODULE[,MODULE]")
    # a dry run writes nothing, not even a new database: a mistyped SQLite path must not read as
    # "up to date"; a run creates a missing one, as docs/cli.md says, and refuses a store living in
    # this process only (memory://), whose schema records would be gone at exit, as load and copy do
    url = existing_store(args.persistent) if args.dry_run else lasting_store(args.persistent, "migrate")
    context = unpublished(dal.configure(url, args.volatile, namespace=args.namespace))
    report = migrate(context, dry_run=args.dry_run, emit=lambda line: print(line, flush=True),
                     progress=lambda total, label: Progress(total, label))
    return 0 if report.ok else 1
