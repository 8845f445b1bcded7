"""The durable queue of dynamics against keys the model does not declare, and ``queue --where``
given one field twice.

A queued dynamic of a hybrid, or a dynamic, the model does not declare (another model's, or a
hand-written key) once made every ``dal cache prefetch`` fail and exit 1: it is skipped, reported and
left queued. ``--where F=a --where F=b`` once queued the objects of ``F=b`` only: it is refused.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from dal import DataObject, Dynamic, Property
from dal.backends.base import Put
from dal.cli import main
from dal.config import Context, configure
from dal.tools import cache


class QueuedShelf(DataObject, hybrid_name="fcqueuedshelf"):
    __properties: list[Property[Any]] = [Property("name", str), Property("row", int, default=0)]
    __dynamics = [Dynamic("load", int, 600)]

    def _load(self) -> int:
        return self.row * 10


GHOST_GUID = "0e5c1f6a-9b1d-4f53-8a1b-2c3d4e5f6a7b"


def _stores(tmp_path: Path) -> tuple[Context, list[str]]:
    store = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    volatile, namespace = f"memory://{uuid.uuid4().hex[:8]}", f"q{uuid.uuid4().hex[:6]}"
    return (configure(store, volatile, namespace=namespace),
            ["--persistent", store, "--volatile", volatile, "--namespace", namespace, "--hybrids", __name__])


def _shelves(rows: list[int]) -> list[QueuedShelf]:
    made = [QueuedShelf(data={"name": f"s{n}", "row": row}) for n, row in enumerate(rows)]
    for shelf in made:
        shelf.save()
    return made


def test_prefetch_skips_and_keeps_a_queued_dynamic_the_model_does_not_declare(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context, stores = _stores(tmp_path)
    shelf, = _shelves([2])
    queue = f"{context.keys.root}m/cachequeue/"
    ghost = cache.Queued("fcghost", GHOST_GUID, "load")
    renamed = cache.Queued("fcqueuedshelf", shelf.guid, "weight")
    assert context.persistent.commit([], [Put(f"{queue}fcghost/{GHOST_GUID}/load", b'{"n":0}'),
                                          Put(f"{queue}fcqueuedshelf/{shelf.guid}/weight", b'{"n":1}'),
                                          Put(f"{queue}fcqueuedshelf", b"not a queued dynamic")]).ok
    assert cache.queue(context, "fcqueuedshelf", "load") == 1
    assert cache.queued(context) == [ghost, renamed, cache.Queued("fcqueuedshelf", shelf.guid, "load")]
    capsys.readouterr()
    for run in range(2):  # not once: the same on every run
        assert main(["cache", "prefetch", *stores]) == 0
        out = capsys.readouterr().out
        assert "skipped: fcghost.load" in out and "skipped: fcqueuedshelf.weight" in out
        assert f"prefetched {1 - run} dynamics, 0 failed, 0 of deleted objects dropped, 2 undeclared " \
               "skipped" in out
        assert cache.queued(context) == [ghost, renamed]  # left for a model that declares them
    outcome = cache.prefetch(context)
    assert outcome.undeclared == [ghost, renamed] and not outcome.failed and not outcome.done
    assert context.persistent.get(f"{context.keys.root}m/cacheclaims/fcghost/{GHOST_GUID}/load") is None


def test_queue_refuses_a_where_field_given_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context, stores = _stores(tmp_path)
    _shelves([1, 2, 2])
    capsys.readouterr()
    twice = ["--where", "row=1", "--where", "row=2"]
    assert main(["cache", "queue", "fcqueuedshelf.load", *twice, *stores]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: --where names row more than once") and "give each field once" in err
    assert out == "" and cache.queued(context) == []  # nothing queued, neither value's objects
    assert main(["cache", "queue", "fcqueuedshelf.load", "--where", "row=2", "--where", "name=s1",
                 *stores]) == 0  # different fields: all of them apply
    assert len(cache.queued(context)) == 1
