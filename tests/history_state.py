"""The parent's part of the randomized history test (tests/test_random_histories.py): the first
objects, logged as worker 0, and the end state the checker compares with its replay."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from history_hybrids import RhGroup, RhItem
from history_worker import COLORS, document_of, forget_commit, last_commit

from dal import DataList
from dal.config import Context
from dal.tools.check.integrity import check


def seed_objects(out: Path) -> None:
    """Save 3 groups and 6 items (as worker 0, under ``commit_spy()``) and log them in ``out``."""
    records = []
    groups = []
    for i in range(3):
        start = time.monotonic()
        forget_commit()
        group = RhGroup(data={"label": f"g{i}"})
        group.save()
        records.append({"w": 0, "op": "gcreate", "guid": group.guid, "start": start, "end": time.monotonic(),
                        "ok": True, "rev": group._revision, "crev": last_commit()})
        groups.append(group)
    for i in range(6):
        start = time.monotonic()
        forget_commit()
        item = RhItem(data={"code": f"c{i}", "color": COLORS[i % 3], "group": groups[i % 3]})
        if i < 2:
            item.peer = groups[i]
        item.save()
        records.append({"w": 0, "op": "create", "guid": item.guid, "start": start, "end": time.monotonic(),
                        "ok": True, "rev": item._revision, "crev": last_commit(), "doc": document_of(item)})
    out.write_text("".join(json.dumps(record) + "\n" for record in records))


def end_state(context: Context) -> dict[str, Any]:
    """Return every stored item (revision and document), the stored groups, and `dal check`'s
    problems, read through a freshly configured ``context``."""
    end: dict[str, Any] = {"items": {}, "groups": sorted(DataList(RhGroup).guids)}
    for guid in DataList(RhItem).guids:
        try:
            item = RhItem(guid)
            end["items"][guid] = {"rev": item._revision, "doc": document_of(item)}
        except Exception as exc:
            end["items"][guid] = {"err": repr(exc)}
    report = check(context)
    end["check"] = [f"{problem.kind}: {problem.key}: {problem.message}" for problem in report.problems]
    return end
