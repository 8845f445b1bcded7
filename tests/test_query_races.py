"""Cached query results under concurrency: a query right after any committed write returns the new truth.

One writer (this process) makes random writes on etcd + memcached. After each ``save()`` or
``delete()`` returns it publishes a sequence number, then works out the truth for a fixed set
of queries from a raw scan of the durable store. Reader processes query all the time, so
their result caches are filled while writes land. Each reader answer is recorded with the
sequence numbers seen before and after it, and judged object by object: whether an object is in
it must be what the truth said after one of those writes, never older than the last write that
had returned when the query started (and at most the one in flight when it ended). An object no
write of that window changed is thus exactly as the truth has it. The answer as a whole need not
be one instant's truth: a query reads its candidates (index entries, links) and then their
documents, and two writes landing between those reads can leave it with one object as of the
first and another as of the second (docs/queries.md says so).
"""

from __future__ import annotations

import json
import multiprocessing
import random
import uuid
from typing import Any

import pytest
from query_hybrids import Item, Kind, Site
from test_query_oracle import brute_force

from dal import DataList, configure
from dal.backends.base import DeletePrefix
from dal.config import Context

QUERIES: list[dict[str, Any]] = [
    {"type": "AND", "items": [("status", "EQUALS", "RUNNING")]},
    {"type": "AND", "items": [("size", "GT", 20)]},
    {"type": "AND", "items": [("kind.code", "EQUALS", "alba")]},
    {"type": "OR", "items": [("status", "IN", ["NEW", "STOPPED"]), ("tags", "CONTAINS", "gold")]},
    {"type": "AND", "items": []},
]
STATUSES = ["NEW", "RUNNING", "STOPPED"]
WRITES = 200


def _reader(persistent: str, volatile: str, namespace: str, kinds: list[str], seq: Any, stop: Any,
            start: Any, seed: int) -> list[tuple[int, int, int, list[str]]]:
    """Query until told to stop; return (query, seq before, seq after, answer) for every answer."""
    configure(persistent, volatile, namespace=namespace)
    queries = QUERIES + [{"type": "AND", "items": [("kind_guid", "EQUALS", guid)]} for guid in kinds]
    rng = random.Random(seed)
    assert DataList(Item, queries[0]).guids is not None  # connected and warm before the writer starts
    start.wait()
    answers = []
    while not stop.is_set():
        number = rng.randrange(len(queries))
        before = seq.value
        answer = sorted(DataList(Item, queries[number]).guids)
        answers.append((number, before, seq.value, answer))
    return answers


def truth(context: Context, queries: list[dict[str, Any]]) -> list[list[str]]:
    """Answer every query by brute force over a raw scan of the durable store."""
    world: dict[str, dict[str, dict[str, Any]]] = {"item": {}, "kind": {}, "site": {}}
    for hybrid, cls in (("item", Item), ("kind", Kind), ("site", Site)):
        prefix = context.keys.docs(cls._meta.name)
        for key, entry in context.persistent.scan(prefix):
            document = json.loads(entry.value)
            defaults = {"status": "NEW", "size": 0, "tags": [], "note": None, "kind_guid": None}
            world[hybrid][key[len(prefix):]] = {**defaults, **document, "guid": key[len(prefix):]}
    return [sorted(brute_force(query, world)) for query in queries]


def misplaced(answer: list[str], allowed: list[list[str]]) -> list[str]:
    """Return the objects whose presence in ``answer`` is not what any of the ``allowed`` truths says."""
    kept = set(answer)
    return sorted(guid for guid in kept.union(*allowed)
                  if not any((guid in kept) == (guid in truth) for truth in map(set, allowed)))


def test_control_the_check_catches_an_answer_older_than_its_window_and_one_made_up() -> None:
    """An object whose change had returned before the query began must be as changed; an object no
    truth holds must not appear; one a write of the window changed may be either way."""
    older, window = ["a", "b"], [["b"], ["b", "c"]]  # a left, then c came, while the query ran
    assert misplaced(older, window) == ["a"]
    assert misplaced(["b", "z"], window) == ["z"]
    assert misplaced(["b", "c"], window) == [] and misplaced(["b"], window) == []
    assert misplaced([], window) == ["b"]  # b was in every truth of the window
    assert misplaced(["c"], [["b"], ["c"]]) == []  # b and c each changed in the window


@pytest.mark.slow
@pytest.mark.etcd
@pytest.mark.memcached
def test_readers_see_every_committed_write(etcd_server: Any, memcached_server: Any) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    context = configure(etcd_server.url, memcached_server.url, namespace=namespace)
    kinds = [Kind(data={"code": code}) for code in ("alba", "ceph")]
    for kind in kinds:
        kind.save()
    items = [Item(data={"name": f"i{n}", "status": STATUSES[n % 3], "size": n * 3, "kind": kinds[n % 2],
                        "tags": ["gold"] if n % 4 == 0 else []}) for n in range(20)]
    for item in items:
        item.save()
    queries = QUERIES + [{"type": "AND", "items": [("kind_guid", "EQUALS", kind.guid)]} for kind in kinds]
    rng = random.Random(7)
    spawn = multiprocessing.get_context("spawn")
    readers = 3
    with spawn.Manager() as manager, spawn.Pool(readers) as pool:
        seq, stop, start = manager.Value("i", 0), manager.Event(), manager.Barrier(readers + 1)
        running = pool.starmap_async(_reader, [(etcd_server.url, memcached_server.url, namespace,
                                                [kind.guid for kind in kinds], seq, stop, start, n)
                                               for n in range(readers)])
        expected = [truth(context, queries)]
        start.wait(timeout=60)
        for number in range(1, WRITES + 1):
            _write(rng, items, kinds, number)
            expected.append(truth(context, queries))
            seq.value = number
        stop.set()
        answers = [answer for reader in running.get(timeout=120) for answer in reader]
    checked = 0
    for query, before, after, answer in answers:
        # the write after `after` may have committed before its number was published
        allowed = [expected[n][query] for n in range(before, min(after + 1, len(expected) - 1) + 1)]
        assert len(set(answer)) == len(answer), (queries[query], answer)  # no object twice
        assert not misplaced(answer, allowed), (queries[query], before, after, answer, allowed)
        checked += 1
    concurrent = sum(1 for _, before, after, _ in answers if 0 < before < WRITES)
    assert checked > 200 and concurrent > 100, "the readers barely ran concurrently with the writer"
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def _write(rng: random.Random, items: list[Item], kinds: list[Kind], number: int) -> None:
    choice = rng.random()
    if choice < 0.15 or len(items) < 5:
        item = Item(data={"name": f"new{number}", "status": rng.choice(STATUSES), "size": rng.randrange(40),
                          "kind": rng.choice(kinds)})
        item.save()
        items.append(item)
        return
    item = rng.choice(items)
    if choice < 0.25:
        item.delete()
        items.remove(item)
        return
    if choice < 0.5:
        item.status = rng.choice(STATUSES)
    elif choice < 0.7:
        item.size = rng.randrange(40)
    elif choice < 0.85:
        item.kind = rng.choice(kinds)
    else:
        item.tags = rng.choice([["gold"], [], ["silver", "gold"]])
    item.save()
