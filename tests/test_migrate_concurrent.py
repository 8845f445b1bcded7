"""Two ``dal migrate`` runs at once (two deploy hosts): a step still runs once, and each run checks
what older processes saved in its own window whatever the other run does to the markers.

Each test injects the interleaving: run B (this thread) pauses at a progress callback or before its
final check while run A, on its own connections in another thread, runs; every wait is bounded.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import persistent_url_for
from migrate_hybrids import Model, bump, declare, documents, key_state

from dal.backends.base import DeletePrefix, Put
from dal.backends.url import parse_url
from dal.config import Context, configure
from dal.objects import schema
from dal.tools.migrate.migrator import Migration, MigrationError, migrate
from dal.tools.migrate.report import Meter
from dal.tools.migrate.verify import KeyVerifier

WAIT = 60.0  # seconds any one side waits for the other before the test fails


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


@pytest.fixture(params=["sqlite", "etcd"])
def two(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[tuple[Context, Context]]:
    """Yield two contexts on one store and namespace, as two hosts running ``dal migrate`` have."""
    url = persistent_url_for(request.param, request, tmp_path)
    first = configure(url, "memory://", namespace=namespace)
    second = Context(parse_url(url), parse_url("memory://"), namespace, None)
    yield first, second
    second.close()
    first.persistent.commit([], [DeletePrefix(first.keys.root)])


class _Quiet:
    def advance(self, amount: int = 1) -> None:
        pass


def pausing(label: str, action: Callable[[], None]) -> Callable[[int, str], AbstractContextManager[Meter]]:
    """Return a progress factory that runs ``action`` (once) when a bar starting with ``label`` opens."""
    done: list[bool] = []

    @contextmanager
    def progress(total: int, text: str) -> Iterator[Meter]:
        if text.startswith(label) and not done:
            done.append(True)
            action()
        yield _Quiet()
    return progress


class Run(threading.Thread):
    """The other ``dal migrate`` run, in a thread; what it raised is kept for :meth:`joined`."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.body = target
        self.errors: list[BaseException] = []
        self.start()

    def run(self) -> None:
        try:
            self.body()
        except BaseException as exc:  # reported by joined()
            self.errors.append(exc)

    def joined(self) -> None:
        self.join(WAIT)
        assert not self.is_alive(), "the other run did not finish in time"
        assert not self.errors, self.errors


def test_a_step_another_run_finished_meanwhile_is_not_applied_again(two: tuple[Context, Context]) -> None:
    b, a = two
    old = declare(2)
    for index in range(5):
        old.disk(data={"name": f"d{index}", "size": index}).save()
    new = declare(3)
    step = [Migration(2, "count generations", bump(new))]

    def run_a() -> None:  # B has read the step as not done and its cursor as absent
        Run(lambda: migrate(a, [new.owner, new.disk], migrations=step)).joined()

    with pytest.raises(MigrationError, match="another dal migrate ran this step"):
        migrate(b, [new.owner, new.disk], migrations=step, progress=pausing("step 2", run_a))
    generations = [doc.get("generation") for doc in documents(b, new.disk._meta).values()]
    assert generations == [1] * 5, "the step ran twice on some objects"


def old_save(context: Context, model: Model, name: str) -> str:
    """Store a disk as a process running version 1 does while trusting an older record: no key of
    version 2's ``tier``."""
    guid = str(uuid.uuid4())
    keys = context.keys
    doc = json.dumps({"name": name, "size": 1}).encode()
    context.persistent.commit([], [Put(keys.doc("mgdisk", guid), doc),
                                   Put(keys.index("mgdisk", "name", name, guid), b"")])
    return guid


def markers(context: Context) -> list[str]:
    return [key for key, _ in context.persistent.scan(f"{context.keys.root}m/verify/")]


@pytest.fixture
def version_1() -> Model:
    old = declare(1)
    for index in range(5):
        old.disk(data={"name": f"d{index}", "size": index, "serial": f"s{index}"}).save()
    return declare(2)


def before_check(monkeypatch: pytest.MonkeyPatch, context: Context, action: Callable[[], None]) -> None:
    """Run ``action`` when the run on ``context`` has marked its keys ready, before its check."""
    original = KeyVerifier._verify_marked

    def patched(self: KeyVerifier) -> None:
        if self.context is context:
            action()
        original(self)
    monkeypatch.setattr(KeyVerifier, "_verify_marked", patched)


class Killed(Exception):
    """Stands in for a run killed at that point."""


def test_each_run_checks_its_own_window_whatever_the_other_removed(
        two: tuple[Context, Context], version_1: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    b, a = two
    new = version_1

    def run_a() -> None:  # B has stored its marker and not built yet: A runs, checks, and is done
        Run(lambda: migrate(a, [new.owner, new.disk])).joined()

    late: list[str] = []
    before_check(monkeypatch, b, lambda: late.append(old_save(b, new, "late")))
    report = migrate(b, [new.owner, new.disk], progress=pausing("migrate mgdisk", run_a))
    assert late and report.ok
    assert any("1 object saved meanwhile" in line for line in report.lines), report.lines
    stored, wanted = key_state(b, new.disk._meta)
    assert stored == wanted, "an object saved in B's window has no tier key, though tier is ready"
    assert markers(b) == []


def test_a_run_killed_before_its_check_leaves_its_marker_though_another_run_removed_it(
        two: tuple[Context, Context], version_1: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    b, a = two
    new = version_1

    def run_a() -> None:
        Run(lambda: migrate(a, [new.owner, new.disk])).joined()

    def kill() -> None:
        old_save(b, new, "late")
        raise Killed

    before_check(monkeypatch, b, kill)
    with pytest.raises(Killed):
        migrate(b, [new.owner, new.disk], progress=pausing("migrate mgdisk", run_a))
    assert len(markers(b)) == 1
    monkeypatch.undo()
    monkeypatch.setattr(schema, "READY_TTL", 0.05)
    dry = migrate(a, [new.owner, new.disk], dry_run=True)
    assert any("(marked by a dal migrate that stopped before checking them, or by one running now)" in line
               for line in dry.lines), dry.lines
    report = migrate(a, [new.owner, new.disk])
    assert any("1 object saved meanwhile" in line for line in report.lines), report.lines
    stored, wanted = key_state(a, new.disk._meta)
    assert stored == wanted
    assert markers(a) == []


def test_a_run_leaves_the_marker_of_one_that_marked_keys_ready_after_its_survey(
        two: tuple[Context, Context], version_1: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    """A found B's marker, then B marked its keys ready: A's check may come before B's window is
    over, so A must not remove it; B is killed before its check, and the next run does it."""
    b, a = two
    new = version_1
    surveyed, go = threading.Event(), threading.Event()
    runs: list[Run] = []

    def a_waits() -> None:  # A has surveyed (and seen B's marker)
        surveyed.set()
        assert go.wait(WAIT)

    def start_a() -> None:
        runs.append(Run(lambda: migrate(a, [new.owner, new.disk],
                                              progress=pausing("migrate mgdisk", a_waits))))
        assert surveyed.wait(WAIT)

    def let_a_finish_then_die() -> None:  # B has marked its keys ready
        go.set()
        runs[0].joined()
        old_save(b, new, "late")
        raise Killed

    before_check(monkeypatch, b, let_a_finish_then_die)
    with pytest.raises(Killed):
        migrate(b, [new.owner, new.disk], progress=pausing("migrate mgdisk", start_a))
    assert len(markers(b)) == 1, "A removed the marker of a run that had marked keys ready since"
    monkeypatch.undo()
    monkeypatch.setattr(schema, "READY_TTL", 0.05)
    report = migrate(a, [new.owner, new.disk])
    assert any("1 object saved meanwhile" in line for line in report.lines), report.lines
    stored, wanted = key_state(a, new.disk._meta)
    assert stored == wanted
    assert markers(a) == []
