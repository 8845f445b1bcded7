"""The steps of ``dal demo`` past the basics: queries, a migration, an integrity check, the diagram.

Each prints what really happened (plans from ``DataList.explain()``, counts from the
migration and check reports and from the context's counters). The migration works on nodes
stored the way release 1 of the sample model stored them, before ``StorageRouter`` gained
``machine_id`` (indexed) and ``node_type``: written raw, as that release's saves left them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dal.hybrids
from dal.backends.base import Delete, Put
from dal.cli.demo_report import Notes, Report, Sample, Since, names
from dal.cli.output import write_bytes
from dal.config import Context
from dal.exceptions import DalError
from dal.hybrids import Backend, Disk, StorageRouter
from dal.objects import schema
from dal.objects.transaction import encode
from dal.query.datalist import DataList
from dal.query.grammar import Operator, WhereOperator
from dal.tools import erd
from dal.tools.check.integrity import Report as CheckReport
from dal.tools.check.integrity import check
from dal.tools.migrate.migrator import migrate

#: StorageRouter properties release 2 of the sample model added; release 1 stored nodes without them
ADDED_IN_RELEASE_2 = ("machine_id", "node_type")
NODES = 3
PAGE_SIZE = 5


def where(*items: Any) -> dict[str, Any]:
    return {"type": WhereOperator.AND, "items": list(items)}


# --- an older release's data -------------------------------------------------------------


def store_release_one_nodes(context: Context, notes: Notes) -> list[StorageRouter]:
    """Store nodes as release 1 did: per node one commit of its document and unique keys, raw."""
    meta = StorageRouter._meta
    model = schema.describe(meta)
    for name in ADDED_IN_RELEASE_2:
        del model["properties"][name]
    indexed = [prop.name for prop in meta.indexed if prop.name not in ADDED_IN_RELEASE_2]
    unique = [prop.name for prop in meta.unique if prop.name not in ADDED_IN_RELEASE_2]
    # what release 1's first save recorded: its own model, with every key it maintained complete
    record = schema.complete_record(meta).replace(model=model, indexed=indexed, unique=unique)
    keys = context.keys
    guids: list[str] = []
    for number in range(1, NODES + 1):
        guid = str(uuid.uuid4())
        document = {"name": f"node{number}", "ip": f"10.0.0.{number}", "status": "ONLINE"}
        ops = [Put(keys.doc(meta.name, guid), encode(document))]
        ops += [Put(keys.unique(meta.name, name, document[name]), guid.encode()) for name in unique]
        ops += [Put(keys.index(meta.name, name, document.get(name), guid), b"") for name in indexed]
        if not guids:
            ops.append(Put(keys.schema(meta.name), record.encode()))
        context.persistent.commit([], ops)
        guids.append(guid)
    schema.forget(context)  # this process must see the record just written, not a remembered absence
    nodes = [StorageRouter(guid) for guid in guids]
    node = nodes[0]
    notes.append(f"{len(nodes)} nodes stored as release 1 of the model did ({len(guids)} raw commits, no "
                 f"{' or '.join(ADDED_IN_RELEASE_2)}); they load at once with the declared defaults: "
                 f"{node.name}.node_type={node.node_type!r}, machine_id={node.machine_id!r}")
    return nodes


# --- queries -------------------------------------------------------------------------------


def queries(report: Report, context: Context, sample: Sample) -> None:
    with report.step("query") as notes:
        running = DataList(Backend, where(("status", Operator.EQUALS, "RUNNING")))
        notes.append(f"{len(running)} of {len(DataList(Backend))} backends are RUNNING")
        notes.line(_answer(DataList(Disk, where(("name", Operator.IN, ["disk2", "disk10"])))))
        notes.line(_answer(DataList(Disk, where(("name", Operator.CONTAINS, "CLONE", False)))))

    with report.step("explain") as notes:
        by_type = where(("backend_type.code", Operator.EQUALS, sample.alba.code))
        first, *plan = str(DataList(Backend, by_type).explain()).splitlines()
        notes.append(first)
        for line in plan:
            notes.line(line)
        moved = Since(context)
        again = str(DataList(Backend, by_type).explain()).splitlines()[1].strip()
        notes.line(f"the same query again -> {again}; query hits +{moved('query_hits')}")

    with report.step("sort") as notes:
        disks = DataList(Disk)
        disks.sort()
        ordered = [disk.name for disk in disks]
        notes.append(f"{len(ordered)} disks by name, naturally: {' '.join(ordered)}")
        page = disks.page(2, PAGE_SIZE)
        shown = " ".join(disk.name for disk in page.items)
        notes.line(f"page {page.number} of {page.pages} ({page.size} a page): {shown}; "
                   f"plain string order would start {' '.join(sorted(ordered)[:4])}")

    with report.step("reverse") as notes:
        pool, other = sample.pools
        moved = Since(context)
        for _ in range(2):  # the second read of each list comes from the result cache
            counts = [len(pool.disks), len(other.disks)]
        computed, cached = moved("query_misses"), moved("query_hits")
        disk = next(iter(pool.disks))
        disk.pool = other
        disk.save()
        moved = Since(context)
        after = [len(pool.disks), len(other.disks)]
        notes.append(f"{pool.name}.disks {counts[0]}, {other.name}.disks {counts[1]} ({computed} computed, "
                     f"then {cached} from cache); {disk.name} moved to {other.name} -> {after[0]} and "
                     f"{after[1]}: its save invalidated both cached lists "
                     f"({moved('query_misses')} recomputed)")


def _answer(rows: DataList[Any]) -> str:
    """Return ``Hybrid where query: names (how the first step found them)``."""
    plan = rows.explain()
    rows.sort()
    return f"{plan.hybrid} where {plan.query}: {names(rows)} ({plan.steps[0].how})"


# --- migration -----------------------------------------------------------------------------


def migration(report: Report, context: Context) -> None:
    sample = [getattr(dal.hybrids, name) for name in dal.hybrids.__all__]
    probe = where(("machine_id", Operator.EQUALS, None))
    with report.step("migrate") as notes:
        before = DataList(StorageRouter, probe).explain().steps[0].how
        records = _schema_records(context)
        # the sample model declares no numbered steps; steps other imported modules declare
        # concern their own data, not the demo's
        dry = migrate(context, sample, migrations=[], dry_run=True)
        done = migrate(context, sample, migrations=[])
        written = sum(1 for key, revision in _schema_records(context).items() if records.get(key) != revision)
        after = DataList(StorageRouter, probe).explain().steps[0].how
        again = migrate(context, sample, migrations=[])
        notes.append("dry run: " + "; ".join(line for line in dry.lines if not line.startswith("dry run")))
        rewritten = sum(done.objects.values())
        notes.line(f"run: {rewritten} objects brought up to date and {written} schema records written in "
                   f"{done.commits} transactions; run again: {again.lines[-1]} "
                   f"({again.commits} transactions)")
        notes.line(f"a query on machine_id: before, {before}; after, {after}")


def _schema_records(context: Context) -> dict[str, int]:
    return {key: entry.revision for key, entry in context.persistent.scan(context.keys.schemas())}


# --- integrity -----------------------------------------------------------------------------


def integrity(report: Report, context: Context, sample: Sample) -> None:
    with report.step("check") as notes:
        first = check(context)
        notes.append(f"{_verdict(first)}: {sum(first.documents.values())} documents of "
                     f"{len(first.documents)} hybrids, {first.keys} unique, index and link keys")
        disk = sample.disks[-1]
        # a hand edit (or a partial restore) loses one index entry
        entry = context.keys.index(Disk._meta.name, "name", disk.name, disk.guid)
        context.persistent.commit([], [Delete(entry)])
        by_name = where(("name", Operator.EQUALS, disk.name))
        hidden = len(DataList(Disk, by_name))
        repaired = check(context, repair=True)
        found = ", ".join(f"{kind.value} {count}" for kind, count in repaired.counts().items())
        shown = len(DataList(Disk, by_name))
        notes.line(f"{disk.name}'s index entry deleted by hand: a query by name finds {hidden}; "
                   f"check --repair found {found}, fixed {len(repaired.fixed)}; the query finds {shown}; "
                   f"checked again: {_verdict(check(context))}")


def _verdict(report: CheckReport) -> str:
    if report.clean:
        return "clean"
    return "problems: " + ", ".join(f"{kind.value} {count}" for kind, count in report.counts().items())


# --- diagram -------------------------------------------------------------------------------


def diagram(report: Report, path: Path, databases: Sequence[str] = ()) -> None:
    """Draw the sample model into ``path``, in the format its suffix names (``.png``, ``.mmd``, ``.dot``),
    else SVG; the file appears whole or not at all, as ``dal erd -o`` writes it, never over one of the
    SQLite ``databases`` (the demo's store)."""
    fmt: erd.Format = erd.SUFFIXES.get(path.suffix.lower(), "svg")
    with report.step("erd") as notes:
        drawn = erd.hybrids_in(["dal.hybrids"])
        try:
            picture = erd.render(drawn, fmt)
        except erd.GraphvizNotFoundError:
            notes.append(f"{path} not written: Graphviz's dot is not installed (apt-get install graphviz); "
                         "`dal erd` prints the diagram as Mermaid text without it")
            return
        data = picture.encode() if isinstance(picture, str) else picture
        try:
            write_bytes(str(path), data, databases=databases)
        except DalError as exc:  # checked before the demo began; it changed since
            raise DalError(f"{exc}; name another file with --erd (or '' to draw none)") from exc
        drawer = "drawn by Graphviz " if fmt in ("svg", "png") else ""
        notes.append(f"wrote {path}: the {len(drawn)} hybrids of the sample model, {drawer}"
                     f"({len(data)} bytes of {fmt.upper() if fmt != 'mermaid' else 'Mermaid'})")
