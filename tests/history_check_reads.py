"""The reads, queries, errors and end state of a replayed history (see tests/history_check.py)."""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import Any

from history_check import Replay, Step

#: operations that read an item: their own revision (or a NotFound) ...
READS = ("load", "refresh", "iterload")
#: ... or the revision they started from (``base_rev``, read by ``lend``)
BASE_READS = ("modify", "relink", "delete", "smsave")
QUERIES = ("query", "listall", "reverse", "iterate", "riterate")


def check_reads(replay: Replay) -> None:
    """Check every read against the replayed history of the item it read."""
    seen: dict[int, dict[str, tuple[int, dict[str, Any]]]] = collections.defaultdict(dict)
    for r in sorted(replay.records, key=lambda r: (r["w"], r["start"])):
        op = r["op"]
        if op in READS + BASE_READS and r.get("guid"):
            if op in READS:
                rev, doc = (r.get("rev"), r.get("doc")) if r.get("ok") else (None, None)
                end = r["end"]
                not_found = not r.get("ok") and r.get("err") == "ObjectNotFoundError"
            else:
                rev, doc, end = r.get("base_rev"), r.get("base_doc"), r.get("lend", r["end"])
                not_found = rev is None and r.get("err") == "ObjectNotFoundError"
            if rev is not None:
                replay.reads += 1
                read(replay, r, rev, doc, seen[r["w"]].get(r["guid"]))
                if r["guid"] not in seen[r["w"]] or seen[r["w"]][r["guid"]][0] < rev:
                    seen[r["w"]][r["guid"]] = (rev, r)
            elif not_found:
                replay.reads += 1
                read_not_found(replay, r, end)
        if r.get("ok") and op in ("create", "modify", "relink", "hmodify", "smsave") and r.get("rev"):
            seen[r["w"]][r["guid"]] = (r["rev"], r)


def read(replay: Replay, r: dict[str, Any], rev: int, doc: Any,
         last: tuple[int, dict[str, Any]] | None) -> None:
    """Check a read of revision ``rev`` (document ``doc``); ``last`` is what its process saw before."""
    history = replay.item_history[r["guid"]]
    exact = [step for step in history if step[0] == rev]
    if not exact:
        replay.bad("read a revision no write produced", replay.show(r))
    elif doc is not None and exact[0][1] != doc:
        replay.bad("read doc differs from the doc written at that revision", replay.show(r),
                   replay.show(exact[0][5]))
    newer = [step for step in history if step[3] < r["start"] and step[0] > rev]
    if newer:
        step = max(newer, key=lambda step: step[0])
        replay.bad("STALE read: older than a write completed before the read began", replay.show(r),
                   replay.show(step[5]))
    if last and last[0] > rev:
        replay.bad("read went backwards in one process", replay.show(last[1]), replay.show(r))


def read_not_found(replay: Replay, r: dict[str, Any], end: float) -> None:
    """Check a NotFound: the item must not have been stored (and not deleted) before the read."""
    history = replay.item_history[r["guid"]]
    done = [step for step in history if step[3] < r["start"]]
    if done:
        step = max(done, key=lambda step: step[0])
        if step[1] is not None and not any(x[1] is None and x[2] < end for x in history):
            replay.bad("STALE NotFound: item whose create completed before the read", replay.show(r),
                       replay.show(step[5]))


def expected_member(replay: Replay, guid: str, start: float, end: float, matches: Callable[[Any], bool],
                    kinds: tuple[str, ...]) -> tuple[bool, Step | None] | None:
    """Tell whether item ``guid`` must be in a result taken between ``start`` and ``end``, with the
    write that decides it; None when one of its writes overlapped the query (either is right)."""
    history = [step for step in replay.item_history[guid] if step[4] in kinds]
    if any(step[2] < end and step[3] > start for step in history):
        return None
    done = [step for step in history if step[3] < start]
    if not done:
        return (False, None)
    step = max(done, key=lambda step: step[0])
    # the state includes the abandon rewrites up to the newest write completed before the query
    state = replay.at(guid, max(x[0] for x in replay.item_history[guid] if x[3] < start))
    return (state is not None and state[1] is not None and matches(state[1]), step)


def check_queries(replay: Replay) -> None:
    """Check every query result (and reverse list, and one-to-one accessor) against the replay."""
    for r in replay.records:
        if not r.get("ok") or r["op"] not in QUERIES:
            continue
        replay.queries += 1
        kinds: tuple[str, ...] = ("save", "del")
        if r["op"] in ("query", "iterate"):
            matches = _color(r["color"])
        elif r["op"] == "listall":
            matches = _anything
        else:
            matches, kinds = _field("group_guid", r["guid"]), ("save", "del", "abandon")
        if r["op"] == "reverse":
            reverse(replay, r)
        members(replay, r, matches, kinds, set(r["result"]))


def _color(color: str) -> Callable[[Any], bool]:
    return lambda doc: bool(doc["color"] == color)


def _field(name: str, guid: str) -> Callable[[Any], bool]:
    return lambda doc: bool(doc[name] == guid)


def _anything(doc: Any) -> bool:
    return True


def members(replay: Replay, r: dict[str, Any], matches: Callable[[Any], bool], kinds: tuple[str, ...],
            result: set[str]) -> None:
    for guid in list(replay.item_history):
        member = expected_member(replay, guid, r["start"], r["end"], matches, kinds)
        if member is None:
            continue
        if member[0] and guid not in result:
            replay.bad(f"{r['op']} result MISSING an item whose matching write completed before",
                       f"item {guid}", replay.show(r), replay.show(member[1][5]) if member[1] else "")
        if not member[0] and guid in result:
            replay.bad(f"{r['op']} result CONTAINS an item that did not match / was deleted before",
                       f"item {guid}", replay.show(r),
                       replay.show(member[1][5]) if member[1] else "(never written before the query)")


def reverse(replay: Replay, r: dict[str, Any]) -> None:
    """Check a group read after its delete completed, and its one-to-one accessor."""
    gone = [step for step in replay.group_history[r["guid"]] if step[1] is None and step[3] < r["start"]]
    if gone:
        replay.bad("STALE group read: loaded after its delete completed", replay.show(r),
                   replay.show(gone[0][5]))
    kinds = ("save", "del", "abandon")
    for guid in list(replay.item_history):
        member = expected_member(replay, guid, r["start"], r["end"], _field("peer_guid", r["guid"]), kinds)
        if member is None:
            continue
        if member[0] and r["one"] != guid:
            replay.bad("one-to-one accessor misses the item pointing at it", f"item {guid}", replay.show(r),
                       replay.show(member[1][5]) if member[1] else "")
        if not member[0] and r["one"] == guid:
            replay.bad("one-to-one accessor names an item not pointing at it", f"item {guid}",
                       replay.show(r), replay.show(member[1][5]) if member[1] else "")


def check_errors(replay: Replay) -> None:
    """A failed save leaves its object as it was; every error is one of dal's."""
    for r in replay.records:
        if r.get("NOT_AS_IT_WAS"):
            replay.bad("failed save changed the in-memory object", replay.show(r), *r["NOT_AS_IT_WAS"])
        if not r.get("ok") and str(r.get("err", "")).startswith("UNTYPED"):
            replay.bad("untyped error", replay.show(r), r.get("msg", ""))


def errors(replay: Replay) -> dict[str, int]:
    """Count the failed operations by operation and error."""
    found = collections.Counter(f"{r['op']}:{r.get('err')}" for r in replay.records if not r.get("ok"))
    return dict(found)


def check_end(replay: Replay) -> None:
    """The end state equals the replay, holds no unique value twice and no dangling relation, each
    counter ``a`` counts its successful increments, and `dal check` found nothing."""
    end = replay.end
    for guid, stored in end["items"].items():
        if "err" in stored:
            replay.bad("end: listed item does not load", guid, stored["err"])
        elif guid not in replay.items:
            replay.bad("end: item stored but replay says deleted/absent", guid, json.dumps(stored))
        elif stored["rev"] != replay.item_history[guid][-1][0] or stored["doc"] != replay.items[guid]:
            replay.bad("end: item differs from the replay", guid, json.dumps(stored),
                       f"replay rev {replay.item_history[guid][-1][0]} {replay.items[guid]}")
    for guid in replay.items:
        if guid not in end["items"]:
            replay.bad("end: item in replay missing from the store", guid)
    if set(end["groups"]) != replay.groups:
        replay.bad("end: groups differ from replay", str(set(end["groups"]) ^ replay.groups))
    docs = [stored["doc"] for stored in end["items"].values() if "doc" in stored]
    for name in ("code", "peer_guid"):
        for value, count in collections.Counter(doc[name] for doc in docs if doc[name]).items():
            if count > 1:
                replay.bad(f"end: {name} held twice", value)
    for guid, stored in end["items"].items():
        for relation in ("group_guid", "peer_guid"):
            if "doc" in stored and stored["doc"][relation] and stored["doc"][relation] not in end["groups"]:
                replay.bad("end: dangling relation", guid, relation, stored["doc"][relation])
    increments(replay)
    for problem in end["check"]:
        replay.bad("dal check problem", problem)


def increments(replay: Replay) -> None:
    counted = collections.Counter(
        r["guid"] for r in replay.records
        if r.get("ok") and r["op"] in ("modify", "hmodify") and "a" in r["changes"]
        and r["changes"]["a"] != r["base_doc"]["a"] and r["rev"] != r["base_rev"])
    for guid, stored in replay.end["items"].items():
        if "doc" in stored and stored["doc"]["a"] != counted.get(guid, 0):
            replay.bad("end: counter a differs from the number of successful increments", guid,
                       f"a={stored['doc']['a']} incs={counted.get(guid, 0)}")
