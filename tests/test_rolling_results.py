"""Cached query results stay exact while processes of an older model still write (a rolling deploy).

A newer model's query on a property only it declares reads a document without that property as its
default. An older model's create or delete names no version of a property it does not know, so a
result cached by the newer model on a shared cache must depend on what those writes do change: a
condition the default satisfies on ``v/<hybrid>/guid/*`` (every create and delete), and a delete
names the versions of every field its document holds, declared or not (docs/queries.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rolling_hybrids import Rolling

import dal.objects.schema
from dal import DataList, configure
from dal.cache.journal import RECORD
from dal.config import Context
from dal.exceptions import BackendError

HERE = Path(__file__).parent
WRITER = """
import sys
from dal import configure
from rolling_hybrids import Rolling
configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
if sys.argv[4] == "create":
    made = Rolling(data={"name": sys.argv[5]})
    made.save()
    print(made.guid)
else:
    Rolling(sys.argv[5]).delete()
"""


def old_model(store: str, cache: str, namespace: str, action: str, argument: str) -> str:
    """Run one write of the older model in a process of its own; return what it printed."""
    env = {**os.environ, "DAL_TEST_OLD_MODEL": "1", "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    done = subprocess.run([sys.executable, "-c", WRITER, store, cache, namespace, action, argument],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def journal_settled(context: Context) -> None:
    """Delete this process's delivered journal records now, and wait until the journal holds none.

    A process's first cache read delivers every record of the journal again, young ones included
    (``dal/cache/sweeps.py``): an older model started while this process's last save's record waits
    for its flush (``FLUSH_AFTER``, 0.2 s) drops the results that save touched, whatever its own
    write names, so a test of what that write names would pass only when the flush came first.
    """
    assert context.journal is not None
    context.journal.flush()
    deadline = time.monotonic() + 5  # another process's record: a sweep delivers it after GRACE
    while any(entry.value[:1] == RECORD for _, entry in context.persistent.scan(context.keys.journal())):
        assert time.monotonic() < deadline, "the journal still holds an undelivered record"
        time.sleep(0.05)


@pytest.fixture(params=["memcached", "redis"])
def shared_cache(request: pytest.FixtureRequest) -> str:
    server: Any = request.getfixturevalue(f"{request.param}_server")
    return str(server.url)


@pytest.mark.parametrize("condition", [("added", "EQUALS", "dflt"), ("added", "IN", ["dflt", "x"]),
                                       ("level", "GE", 0), ("added", "NOT_EQUALS", "x")])
def test_an_older_models_creates_and_deletes_reach_a_newer_models_cached_results(
        tmp_path: Path, namespace: str, shared_cache: str, condition: tuple[str, str, Any]) -> None:
    store = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    first = old_model(store, shared_cache, namespace, "create", "old-0")
    context = configure(store, shared_cache, namespace=namespace)

    def ask() -> tuple[list[str], str]:
        found = DataList(Rolling, {"type": "AND", "items": [condition]})
        return sorted(found.guids), found._cache

    assert ask() == ([first], "miss") and ask() == ([first], "hit")
    journal_settled(context)  # only each write's own invalidations may reach the result
    second = old_model(store, shared_cache, namespace, "create", "old-1")
    assert ask() == (sorted([first, second]), "miss"), "the older model's create is listed"
    journal_settled(context)
    old_model(store, shared_cache, namespace, "delete", first)
    assert ask() == ([second], "miss"), "the older model's delete is gone"


def test_an_older_models_delete_of_a_newer_models_object_reaches_results_on_its_value(
        tmp_path: Path, namespace: str, shared_cache: str) -> None:
    store = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    old_model(store, shared_cache, namespace, "create", "old-0")  # its first write records its model
    context = configure(store, shared_cache, namespace=namespace)
    kept, gone = Rolling(data={"name": "kept", "added": "x"}), Rolling(data={"name": "gone", "added": "x"})
    kept.save()
    gone.save()
    query = {"type": "AND", "items": [("added", "EQUALS", "x")]}
    for how in ("miss", "hit"):
        cached = DataList(Rolling, query)
        assert sorted(cached.guids) == sorted([kept.guid, gone.guid]) and cached._cache == how
    journal_settled(context)  # else the delete caught the missing versions 2 runs in 6 (a mutation audit)
    old_model(store, shared_cache, namespace, "delete", gone.guid)  # it kept the field it does not know
    found = DataList(Rolling, query)
    assert found.guids == [kept.guid] and found._cache == "miss"


def test_once_every_document_holds_the_field_a_create_keeps_results_on_its_default(
        tmp_path: Path, namespace: str, shared_cache: str) -> None:
    """The newer model's first save into an empty hybrid records its model (every document holds
    ``added``): a result on ``added``'s default then depends on its value only, as before rolling
    deploys were considered, and creating an object with another value keeps it."""
    configure(f"sqlite:///{tmp_path / 'rolling.sqlite3'}", shared_cache, namespace=namespace)
    first = Rolling(data={"name": "first"})
    first.save()
    query = {"type": "AND", "items": [("added", "EQUALS", "dflt")]}
    for how in ("miss", "hit"):
        found = DataList(Rolling, query)
        assert found.guids == [first.guid] and found._cache == how
    Rolling(data={"name": "other", "added": "x"}).save()
    kept = DataList(Rolling, query)
    assert kept.guids == [first.guid] and kept._cache == "hit"


@pytest.mark.parametrize("condition", [("added", "EQUALS", "dflt"), ("level", "GE", 0)])
def test_an_older_models_writes_after_the_newer_model_recorded_its_own_reach_its_results(
        tmp_path: Path, namespace: str, shared_cache: str, condition: tuple[str, str, Any]) -> None:
    """The newer model's first save into an empty hybrid records its model, so its results on
    ``added``'s default no longer depend on every create; the older model's writes read that record
    and name the versions of the fields it lacks, at the defaults the record gives them."""
    store = f"sqlite:///{tmp_path / 'rolling.sqlite3'}"
    context = configure(store, shared_cache, namespace=namespace)
    first = Rolling(data={"name": "first"})
    first.save()  # the first save: the record lists the newer model

    def ask() -> tuple[list[str], str]:
        found = DataList(Rolling, {"type": "AND", "items": [condition]})
        return sorted(found.guids), found._cache

    assert ask() == ([first.guid], "miss") and ask() == ([first.guid], "hit")
    journal_settled(context)  # only each write's own invalidations may reach the result
    older = old_model(store, shared_cache, namespace, "create", "old-0")
    assert ask() == (sorted([first.guid, older]), "miss"), "the older model's create is listed"
    assert ask() == (sorted([first.guid, older]), "hit")
    journal_settled(context)
    old_model(store, shared_cache, namespace, "delete", older)
    assert ask() == ([first.guid], "miss"), "the older model's delete is gone"


def test_a_cached_result_on_a_default_is_served_while_the_durable_store_is_down(
        tmp_path: Path, namespace: str, shared_cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether the result depends on creates is read from the hybrid's schema record: a hit must not
    need the durable store, so a failed read keeps what was read last."""
    context = configure(f"sqlite:///{tmp_path / 'rolling.sqlite3'}", shared_cache, namespace=namespace)
    first = Rolling(data={"name": "first"})
    first.save()
    query = {"type": "AND", "items": [("added", "EQUALS", "dflt")]}
    assert DataList(Rolling, query).guids == [first.guid]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise BackendError("the durable store is down (the test's)")

    monkeypatch.setattr(dal.objects.schema, "READY_TTL", 0.0)  # every hit asks for the record again
    for method in ("get", "get_many", "scan", "scan_keys"):
        monkeypatch.setattr(context.persistent, method, down)
    for _ in range(3):
        served = DataList(Rolling, query)
        assert served.guids == [first.guid] and served._cache == "hit"
