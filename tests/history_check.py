"""The checker of the randomized history test: replay the logged commits, then judge every read.

The logs (tests/history_worker.py) of all workers are merged; the successful writes, ordered by
their commit revision, are replayed into the state the store must have held at each revision.
Against that replay: each merge (a save over a newer stored document) follows the rule of
``datastore_wins``; no unique value or one-to-one target is held twice, no relation dangles;
a read returns a revision some write produced, with that write's document, not older than a
write completed before the read began, and never older than what the same process saw before;
a query, reverse list or one-to-one accessor names exactly the items that matched (unless a
write of the item overlapped it); the end state equals the replay; `dal check` finds nothing.
The reads, queries and end state are judged in tests/history_check_reads.py.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from history_worker import FIELDS

#: a replayed write: (revision, kind, guid, document, record)
Write = tuple[int, str, str, Any, dict[str, Any]]
#: one entry of an object's replayed history: (revision, document or None, start, end, kind, record)
Step = tuple[int, Any, float, float, str, dict[str, Any]]
SAVES = ("modify", "relink", "hmodify", "smsave")


@dataclass
class Replay:
    """The merged records, the replayed state, what was checked and the problems found."""

    records: list[dict[str, Any]]
    end: dict[str, Any]
    writes: list[Write] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    item_history: dict[str, list[Step]] = field(default_factory=lambda: collections.defaultdict(list))
    group_history: dict[str, list[Step]] = field(default_factory=lambda: collections.defaultdict(list))
    problems: dict[str, list[tuple[str, ...]]] = field(default_factory=lambda: collections.defaultdict(list))
    merges: int = 0
    reads: int = 0
    queries: int = 0

    def bad(self, kind: str, *lines: str) -> None:
        self.problems[kind].append(lines)

    def show(self, record: dict[str, Any]) -> str:
        """Return ``record`` as one JSON line, its times relative to the first operation."""
        first = min(r["start"] for r in self.records)
        shown = dict(record)
        for key in ("start", "end", "lend"):
            if key in shown:
                shown[key] = f"{shown[key] - first:.4f}"
        if len(shown.get("result", ())) > 6:
            shown["result"] = [*shown["result"][:6], "..."]
        if shown.get("ok"):
            shown.pop("msg", None)
        return json.dumps(shown)

    def at(self, guid: str, revision: int) -> Step | None:
        """Return the step of the item's history in effect at ``revision``."""
        current = None
        for step in self.item_history[guid]:
            if step[0] > revision:
                break
            current = step
        return current

    def summary(self) -> str:
        return (f"{len(self.records)} ops, {len(self.writes)} commits, {self.reads} reads checked, "
                f"{self.queries} queries checked, {self.merges} merges checked, "
                f"{sum(map(len, self.problems.values()))} problems")

    def report(self, most: int = 3) -> str:
        """Return each kind of problem found, with its count and its first ``most`` occurrences."""
        lines = []
        for kind, found in self.problems.items():
            lines.append(f"=== {kind}: {len(found)}")
            for occurrence in found[:most]:
                lines.extend(f"    {line}" for line in occurrence)
        return "\n".join(lines)


def load(run: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return the records of every worker's log in ``run`` (w*.jsonl) and its end state (end.json)."""
    records: list[dict[str, Any]] = []
    for path in sorted(run.glob("w*.jsonl")):
        with open(path) as log:
            records.extend(json.loads(line) for line in log)
    return records, json.loads((run / "end.json").read_text())


def expanded(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Number the records; split each save_many into one save per object (``smsave``) and add a
    read (``iterload``) per object an iteration returned."""
    out = []
    for number, record in enumerate(records):
        record["id"] = number
        if record["op"] == "savemany":
            for sub in record.get("sub") or []:
                if "rev" in sub:
                    out.append({**{k: v for k, v in record.items() if k != "sub"}, **sub,
                                "op": "smsave", "held": False})
        elif record["op"] in ("iterate", "riterate") and record.get("ok"):
            out.append(record)
            out.extend({"w": record["w"], "op": "iterload", "guid": read["guid"], "rev": read["rev"],
                        "doc": read["doc"], "start": record["start"], "end": record["end"], "ok": True,
                        "id": number} for read in record["objs"])
        else:
            out.append(record)
    return out


def collect_writes(replay: Replay) -> None:
    """Gather the successful writes, ordered by commit revision; a failed operation must not have
    committed, a save's revision must be its commit's, and no two operations share a revision."""
    for r in replay.records:
        op = r["op"]
        if not r.get("ok") and not (op == "smsave" and r["rev"] != r["base_rev"]):
            if r.get("crev") is not None and op != "smsave":
                replay.bad("failed op with a successful commit", replay.show(r))
            continue
        if op == "create":
            replay.writes.append((r["rev"], "isave", r["guid"], r["doc"], r))
        elif op in SAVES and r["rev"] != r["base_rev"]:
            if op != "smsave" and r.get("crev") != r["rev"]:
                replay.bad("save revision differs from commit revision", replay.show(r))
            replay.writes.append((r["rev"], "isave", r["guid"], r["doc"], r))
        elif op in ("delete", "hdelete") and r.get("crev") is not None:
            replay.writes.append((r["crev"], "idel", r["guid"], None, r))
        elif op == "gcreate":
            replay.writes.append((r["rev"], "gsave", r["guid"], None, r))
        elif op == "gdelete" and r.get("crev") is not None:
            replay.writes.append((r["crev"], "gdel", r["guid"], None, r))
    replay.writes.sort(key=lambda w: w[0])
    operations = collections.defaultdict(set)
    for write in replay.writes:
        operations[write[0]].add(write[4]["id"])
    for write in replay.writes:
        if len(operations[write[0]]) > 1:
            replay.bad("two commits at one revision", replay.show(write[4]))


def replay_writes(replay: Replay) -> None:
    """Apply the writes in revision order, checking each against the state before it."""
    for revision, kind, guid, doc, r in replay.writes:
        if kind == "isave":
            save(replay, revision, guid, doc, r)
        elif kind == "idel":
            if guid not in replay.items:
                replay.bad("delete commit of an absent item", replay.show(r))
            replay.items.pop(guid, None)
            replay.item_history[guid].append((revision, None, r["start"], r["end"], "del", r))
        elif kind == "gsave":
            replay.groups.add(guid)
            replay.group_history[guid].append((revision, True, r["start"], r["end"], "save", r))
        else:
            group_deleted(replay, revision, guid, r)


def save(replay: Replay, revision: int, guid: str, doc: dict[str, Any], r: dict[str, Any]) -> None:
    previous = replay.items.get(guid)
    if r["op"] in SAVES:
        if previous is None:
            replay.bad("save succeeded on an item the replay has deleted/absent", replay.show(r))
        else:
            merged(replay, guid, previous, doc, r)
    elif previous is not None:
        replay.bad("create over an existing item", replay.show(r))
    for relation in ("group_guid", "peer_guid"):
        if doc[relation] is not None and doc[relation] not in replay.groups:
            replay.bad("dangling relation written",
                       f"{relation}={doc[relation]} not stored at rev {revision}", replay.show(r))
    for other, stored in replay.items.items():
        if other == guid:
            continue
        if doc["code"] is not None and stored["code"] == doc["code"]:
            replay.bad("unique value held twice", f"code {doc['code']!r} also on {other}", replay.show(r))
        if doc["peer_guid"] is not None and stored["peer_guid"] == doc["peer_guid"]:
            replay.bad("one-to-one target held twice", f"peer {doc['peer_guid']} also on {other}",
                       replay.show(r))
    replay.items[guid] = doc
    replay.item_history[guid].append((revision, doc, r["start"], r["end"], "save", r))


def merged(replay: Replay, guid: str, previous: dict[str, Any], doc: dict[str, Any],
           r: dict[str, Any]) -> None:
    """Check a save over ``previous`` (the stored document before it): a field changed by this save
    only takes its value, one changed by the store only keeps the store's, one changed by both
    fails the save (``datastore_wins=None``) or takes the winner's value."""
    replay.merges += 1
    base, ours, dsw = r["base_doc"], r["changes"], r["dsw"]
    for name in FIELDS:
        ours_changed = name in ours and ours[name] != base[name]
        theirs_changed = previous[name] != base[name]
        if ours_changed and theirs_changed:
            if dsw is None:
                replay.bad("dsw=None save succeeded although both changed a field",
                           f"field {name}: base {base[name]!r} ours {ours[name]!r} "
                           f"stored-before {previous[name]!r}", replay.show(r))
                continue
            expected = ours[name] if dsw is False else previous[name]
        else:
            expected = ours[name] if ours_changed else previous[name]
        if doc[name] != expected:
            replay.bad("merge result differs from the rule (lost update?)",
                       f"field {name}: base {base[name]!r} ours {ours.get(name, '(unchanged)')!r} "
                       f"stored-before {previous[name]!r} -> stored {doc[name]!r}, expected {expected!r}",
                       replay.show(r), *[replay.show(step[5]) for step in replay.item_history[guid][-3:]])


def group_deleted(replay: Replay, revision: int, guid: str, r: dict[str, Any]) -> None:
    """Replay a group's delete: the items pointing at it lose the relation, which needs abandon."""
    replay.groups.discard(guid)
    replay.group_history[guid].append((revision, None, r["start"], r["end"], "del", r))
    for item, stored in list(replay.items.items()):
        changed = dict(stored)
        for relation in ("group_guid", "peer_guid"):
            if stored[relation] == guid:
                if not r.get("abandon"):
                    replay.bad("group deleted without abandon while linked", f"{item}.{relation}",
                               replay.show(r))
                changed[relation] = None
        if changed != stored:
            replay.items[item] = changed
            replay.item_history[item].append((revision, changed, r["start"], r["end"], "abandon", r))


def check_history(records: list[dict[str, Any]], end: dict[str, Any]) -> Replay:
    """Replay and judge one history (the records of every worker, and the end state)."""
    from history_check_reads import check_end, check_errors, check_queries, check_reads

    replay = Replay(expanded([dict(record) for record in records]), end)
    collect_writes(replay)
    replay_writes(replay)
    check_reads(replay)
    check_queries(replay)
    check_errors(replay)
    check_end(replay)
    return replay


def check_run(run: Path) -> Replay:
    """Replay and judge the history logged in the directory ``run``."""
    return check_history(*load(run))
