"""Rolling deploys: the interleavings that could leave a newer model's cached query result stale.

An older model's process writes while a newer model's process caches results (docs/queries.md).
Each test injects one interleaving: the older writer's view of the schema record is younger than
READY_TTL when the newer model records its own (its commit must check the record it planned from:
dal/objects/views.py); two threads of the reader store their views of the record out of order
(the older read must not replace the newer); the older writer's delete of the schema version
reaches the cache late, through the journal (the result depends on that version); and an older
model's `dal load` creates objects (it names the versions a save names). Each fails on the code
before these fixes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rolling_hybrids import Rolling

import dal.objects.schema as schema
import dal.query.results as results
from dal import DataList, configure

HERE = Path(__file__).parent
ADDED = {"type": "AND", "items": [("added", "EQUALS", "dflt")]}  # through the index of `added`
LEVEL = {"type": "AND", "items": [("level", "EQUALS", 0)]}  # scanned: no index
WINDOW_WRITER = """
import sys, time, os
from dal import configure, DataList
from dal.config import current
from rolling_hybrids import Rolling
configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
warm = Rolling(data={"name": "queue-item"}); warm.save(); warm.delete()   # hybrid empty again
current().objects.trust.first_read()  # caught up before the test goes on (a first catch-up clears)
open(sys.argv[4], "w").close()                      # warmed: its view (no record) is fresh
while not os.path.exists(sys.argv[5]):
    time.sleep(0.01)
time.sleep(float(os.environ.get("DAL_TEST_DELAY", "0")))
made = Rolling(data={"name": "old-late"}); made.save()
print(made.guid)
"""


CREATE_WRITER = """
import sys, time, os
from dal import configure
from dal.config import current
from rolling_hybrids import Rolling
configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
current().objects.trust.first_read()  # caught up before the test goes on (a first catch-up clears)
open(sys.argv[4], "w").close()
while not os.path.exists(sys.argv[5]):
    time.sleep(0.005)
made = Rolling(data={"name": "old"}); made.save()
print(made.guid)
"""


#: CREATE_WRITER whose cache deletes of the schema version fail (the journal delivers them later)
LATE_WRITER = """
import os
import dal.cache.leases as leases
real = leases.LeasedCache._delete
def _delete(self, keys):
    if os.environ.get("DAL_TEST_FAIL") == "1" and any(k.endswith("#schema") for k in keys):
        failed = [k for k in keys if k.endswith("#schema")]
        out = real(self, [k for k in keys if k not in failed])
        for k in failed:
            for node in self.placement.holders(k):
                out.setdefault(node, []).append(k)
        return out
    return real(self, keys)
leases.LeasedCache._delete = _delete
""" + CREATE_WRITER


LOAD_WRITER = """
import sys, uuid
from dal import configure
from dal.tools.transfer.dump import parse_dump
from dal.tools.transfer.load import load
import rolling_hybrids
context = configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
guid = str(uuid.uuid4())
dump = parse_dump({"format": "dal-dump", "version": 1, "namespace": "x",
                   "hybrids": {"rolling": [{"guid": guid, "data": {"name": "loaded"}}]}})
load(context, dump)
print(guid)
"""


#: a load by the older model whose view of the record (none: the hybrid is empty) is read first
WINDOW_LOADER = """
import os, sys, time, uuid
from dal import configure
from dal.objects import schema
from dal.tools.transfer.dump import parse_dump
from dal.tools.transfer.load import load
from rolling_hybrids import Rolling
context = configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
schema.ensure_recorded(context, Rolling._meta)
context.objects.trust.first_read()  # caught up before the test goes on (a first catch-up clears)
open(sys.argv[4], "w").close()
while not os.path.exists(sys.argv[5]):
    time.sleep(0.005)
guid = str(uuid.uuid4())
load(context, parse_dump({"format": "dal-dump", "version": 1, "namespace": "x",
                          "hybrids": {"rolling": [{"guid": guid, "data": {"name": "loaded"}}]}}))
print(guid)
"""


@pytest.fixture(params=["memcached", "redis"])
def shared_cache(request: pytest.FixtureRequest) -> str:
    server: Any = request.getfixturevalue(f"{request.param}_server")
    return str(server.url)


def older(*args: str, **extra: str) -> subprocess.Popen[str]:
    """Start a process of the older model running ``args``."""
    env = {**os.environ, **extra, "DAL_TEST_OLD_MODEL": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    return subprocess.Popen([sys.executable, "-c", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.005)


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out.strip()


def cached(query: dict[str, Any], expected: list[str], how: str) -> None:
    found = DataList(Rolling, query)
    assert (sorted(found.guids), found._cache) == (sorted(expected), how)


@pytest.mark.parametrize("script", [WINDOW_WRITER, WINDOW_LOADER], ids=["save", "load"])
def test_an_older_writer_whose_view_predates_the_newer_models_record_checks_it(
        tmp_path: Path, namespace: str, shared_cache: str, script: str) -> None:
    """The older process read "no record" just before the newer model's first save recorded its
    model (`added` indexed, ready); its create (a save, or a `dal load`) then neither left `added`
    out of ready nor named the versions of `added` and `level`. Its commit now checks the record
    it planned from."""
    store = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    warmed, go = tmp_path / "warmed", tmp_path / "go"
    writer = older(script, store, shared_cache, namespace, str(warmed), str(go))
    wait_for(warmed, writer)
    configure(store, shared_cache, namespace=namespace)
    first = Rolling(data={"name": "first"})
    first.save()  # the first save into the empty hybrid: the record lists the newer model
    for query in (ADDED, LEVEL):
        cached(query, [first.guid], "miss")
        cached(query, [first.guid], "hit")
    go.touch()
    late = finish(writer)
    for query in (ADDED, LEVEL):
        cached(query, [first.guid, late], "miss")
    configure(store, None, namespace=namespace)  # no cache: what the index itself answers
    assert sorted(DataList(Rolling, ADDED).guids) == sorted([first.guid, late])


@pytest.mark.parametrize("race", [False, True])
def test_an_older_read_of_the_record_never_replaces_a_newer_view(
        tmp_path: Path, namespace: str, shared_cache: str, monkeypatch: pytest.MonkeyPatch,
        race: bool) -> None:
    """Thread A's re-read of the record (its TTL ran out) reads before the older model's record write
    and stores what it read after thread B re-read the record for a cached query: B's newer view
    stays (race=False is the same history without the interleaving)."""
    store = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    context = configure(store, shared_cache, namespace=namespace)
    first = Rolling(data={"name": "first"})
    first.save()
    cached(ADDED, [first.guid], "miss")
    cached(ADDED, [first.guid], "hit")
    warmed, go = tmp_path / "warmed", tmp_path / "go"
    writer = older(CREATE_WRITER, store, shared_cache, namespace, str(warmed), str(go))
    wait_for(warmed, writer)
    real_read = schema.read_record
    a_read, release = threading.Event(), threading.Event()

    def read_record(ctx: Any, hybrid: str) -> Any:
        record = real_read(ctx, hybrid)
        if threading.current_thread().name == "A":
            a_read.set()
            release.wait(10)  # descheduled between its read and storing it
        return record

    monkeypatch.setattr(schema, "read_record", read_record)
    thread_a = threading.Thread(name="A", target=schema.ready_indexes, args=(context, Rolling._meta))
    if race:
        with schema._lock:
            schema._states_of(context)[Rolling._meta].read_at -= schema.READY_TTL  # due for a re-read
        thread_a.start()
        assert a_read.wait(10)  # A holds the record as it was before the older model's write
    go.touch()
    made = finish(writer)
    real_as_of = results.as_of

    def as_of(ctx: Any, meta: Any, token: bytes) -> None:
        real_as_of(ctx, meta, token)
        if race:  # B's view is fresh now; A stores what it read earlier
            release.set()
            thread_a.join()

    monkeypatch.setattr(results, "as_of", as_of)
    cached(ADDED, [first.guid, made], "miss")
    cached(ADDED, [first.guid, made], "hit")


@pytest.mark.parametrize("fail", ["0", "1"])
def test_a_schema_version_delete_that_arrives_late_still_drops_the_result(
        tmp_path: Path, namespace: str, shared_cache: str, fail: str) -> None:
    """The older writer's delete of `v/rolling/#schema` fails (injected; the journal delivers it
    within a sweep or two) while its create's own invalidations arrive: the result cached meanwhile
    depends on the schema version, so it is dropped once the delete arrives."""
    store = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    warmed, go = tmp_path / "warmed", tmp_path / "go"
    writer = older(LATE_WRITER, store, shared_cache, namespace, str(warmed), str(go), DAL_TEST_FAIL=fail)
    configure(store, shared_cache, namespace=namespace)
    first = Rolling(data={"name": "first"})
    first.save()
    wait_for(warmed, writer)
    cached(ADDED, [first.guid], "miss")
    cached(ADDED, [first.guid], "hit")
    go.touch()
    made = finish(writer)
    expected = sorted([first.guid, made])
    assert DataList(Rolling, ADDED).guids  # what this reads may stay cached until the delete arrives
    deadline = time.monotonic() + 5  # the journal's sweeps run every 0.5 s
    while sorted(DataList(Rolling, ADDED).guids) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(DataList(Rolling, ADDED).guids) == expected


@pytest.mark.parametrize("query", [ADDED, LEVEL])
def test_an_older_models_load_reaches_the_newer_models_results(
        tmp_path: Path, namespace: str, shared_cache: str, query: dict[str, Any]) -> None:
    store = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    configure(store, shared_cache, namespace=namespace)
    first = Rolling(data={"name": "first"})
    first.save()
    cached(query, [first.guid], "miss")
    cached(query, [first.guid], "hit")
    loaded = finish(older(LOAD_WRITER, store, shared_cache, namespace))
    cached(query, [first.guid, loaded], "miss")
    cached(query, [first.guid, loaded], "hit")
    # the first load recorded the older model in the record, whose write drops every result of the
    # hybrid; the second finds it recorded: only the versions its load names (of `added` and `level`,
    # which it does not declare) reach the result (found by a mutation audit)
    again = finish(older(LOAD_WRITER, store, shared_cache, namespace))
    cached(query, [first.guid, loaded, again], "miss")

