"""Verify the integrity of a namespace, and with ``--repair`` fix what is safe to fix.

Checks that every document parses and fits the model; every relation points at a stored
object, with its link key; every link comes from a document that points there; every index
entry and unique key matches the document it names, and every document has its own; no
key belongs to an undeclared hybrid or field (nor a schema record or a queued dynamic, under
``m/schema/`` and ``m/cachequeue/``); every schema record is readable. Exit 0 when clean, 1 when
problems were found (with ``--repair``: when some remain), 2 on bad input, 141 when the reader of
its output went away before it was written.

``--repair`` recreates missing index entries, links and unique keys (a unique key only when
exactly one object holds the value), and deletes stale index entries, links and unique
keys, each fix one commit conditional on the revisions it was derived from, so it is safe
beside live writers; it removes a schema record or a queued dynamic of an undeclared hybrid
that has no stored documents. It never
changes a document: dangling relations, duplicate unique values, invalid documents, unreadable
schema records (``dal migrate`` rewrites them) and other keys of undeclared hybrids are reported for
a person to fix.
"""

from __future__ import annotations

import argparse

import dal
from dal.cli import existing_store, shown_store, unpublished
from dal.cli.progress import Progress
from dal.tools.check.integrity import MIGRATE, PHASES, REPAIRABLE, Kind, Problem, Report, check

HELP = "verify stored data against the model and its keys (exit 1 on problems); --repair fixes keys"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repair", action="store_true",
                        help="fix missing and stale index entries, links and unique keys, and remove "
                             "metadata of undeclared hybrids that hold no documents, each in its own "
                             "conditional commit")
    parser.add_argument("--limit", type=int, default=10, metavar="N",
                        help="problems listed per kind (default 10; 0 lists all)")


def run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise dal.exceptions.DalError(f"--limit must be 0 (all) or more, not {args.limit}")
    # only an existing database: a mistyped SQLite path must not read as a clean, empty one
    context = unpublished(dal.configure(existing_store(args.persistent), args.volatile,
                                        namespace=args.namespace))
    with Progress(len(PHASES) + (1 if args.repair else 0), "check") as bar:
        report = check(context, repair=args.repair, progress=lambda phase: bar.advance())
    where = f"namespace {context.namespace!r} of {shown_store(context.persistent_url)}"
    for line in render(report, where, args.limit):
        print(line)
    return 1 if report.remaining else 0


def render(report: Report, where: str, limit: int) -> list[str]:
    """Return the report as lines: a summary, a table of problems by kind, then the details."""
    documents = sum(report.documents.values())
    per_hybrid = ", ".join(f"{name} {count}" for name, count in sorted(report.documents.items()))
    lines = [f"checked {where}: {documents} documents ({per_hybrid or 'none'}), {report.keys} keys"]
    if report.clean:
        lines.append("clean: no problems found")
        return lines
    count = len(report.problems)
    lines.append(f"{count} problem{'' if count == 1 else 's'}:")
    for kind, count in report.counts().items():
        # a repairable kind's problem without a fix (its owner unreadable) needs a person, as it says
        fixable = sum(problem.fix is not None for problem in report.of(kind)) if kind in REPAIRABLE else 0
        how = ("repairable" if fixable == count else f"{fixable} repairable" if fixable
               else "needs `dal migrate`" if kind in MIGRATE or kind is Kind.INVALID_SCHEMA
               else "needs a person")
        lines.append(f"  {kind.value:<20} {count:>6}  {how}")
    for kind in report.counts():
        problems = report.of(kind)
        shown = problems if limit == 0 else problems[:limit]
        lines.append(f"{kind.value}:")
        lines += [f"  {_line(problem)}" for problem in shown]
        if len(shown) < len(problems):
            lines.append(f"  ... and {len(problems) - len(shown)} more (--limit 0 lists all)")
    if report.repaired:
        lines.append(f"repaired {len(report.fixed)} of {len(report.problems)} problems; "
                     f"{len(report.remaining)} remain")
        if report.conflicted:
            lines.append(f"  {len(report.conflicted)} fixes were not applied: the data changed while "
                         "checking; run `dal check` again")
    elif any(problem.fix is not None for problem in report.problems):
        lines.append("run `dal check --repair` to fix the repairable ones")
    unbuilt = [kind.value for kind in report.counts() if kind in MIGRATE]
    if unbuilt:  # not damage: keys a model change asks for, which only `dal migrate` builds
        lines.append(f"run `dal migrate` to build the keys the model added ({', '.join(unbuilt)})")
    if Kind.INVALID_SCHEMA in report.counts():
        lines.append("run `dal migrate` to rewrite the schema records it cannot read (invalid_schema)")
    return lines


def _line(problem: Problem) -> str:
    return f"{problem.message} [{problem.key}]"
