"""Randomized multi-process histories on each store pair, checked afterwards.

The race-test rule of the design (style.md, "Tests"): besides the deterministic races, a
randomized stress test on real servers. Several spawned workers (tests/history_worker.py) create,
load, modify, relink, delete, query and iterate items and groups at random for a few seconds,
logging every operation with its times (tests/history_state.py seeds the namespace and reads
the end state); tests/history_check.py replays the commits and judges every read, query, merge
and the end state (see its docstring). The control test plants faults in a real history and the
checker must report each, so a clean run means something.

The seed is random per run and printed; ``DAL_HISTORY_SEED=N`` replays one.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PairURLs
from history_check import check_history, check_run, load
from history_check_reads import errors
from history_state import end_state, seed_objects
from history_worker import Plan, commit_spy, run

from dal import configure
from dal.config import current

#: alone (make test's second part): the lines it prints past pytest's capture are lost on a worker
pytestmark = pytest.mark.serial

#: the seed of this run: DAL_HISTORY_SEED replays a failure
SEED = int(os.environ.get("DAL_HISTORY_SEED") or random.randrange(1, 1_000_000))
WORKERS = 3
#: seconds each worker works, and the operations it does at most
SECONDS = 6.0
MAX_OPS = 4000
#: seconds the workers may take beyond SECONDS (a spawned process imports dal first)
GRACE = 60.0


def _announce(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print ``line`` past pytest's capture, so CI output shows it on success too."""
    with capsys.disabled():
        print(f"\n{line}")


def _run_workers(urls: PairURLs, run_dir: Path, seed: int) -> None:
    """Seed the namespace, run WORKERS spawned workers, then record the end state in ``run_dir``."""
    urls.configure()
    with commit_spy():
        seed_objects(run_dir / "w0.jsonl")
    spawn = multiprocessing.get_context("spawn")
    plans = [Plan(urls.persistent, urls.volatile, urls.namespace, worker, SECONDS, MAX_OPS,
                  str(run_dir / f"w{worker}.jsonl"), seed * 100 + worker) for worker in range(1, WORKERS + 1)]
    processes = [spawn.Process(target=run, args=(plan,), daemon=True, name=f"history-{plan.worker}")
                 for plan in plans]
    for process in processes:
        process.start()
    deadline = time.monotonic() + SECONDS + GRACE
    for process in processes:
        process.join(timeout=max(0.1, deadline - time.monotonic()))
    hung = [process.name for process in processes if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(5)
    assert not hung, f"seed {seed}: workers {hung} still ran {SECONDS + GRACE} s after they started"
    assert [process.exitcode for process in processes] == [0] * WORKERS, f"seed {seed}: a worker failed"
    context = urls.configure()
    (run_dir / "end.json").write_text(json.dumps(end_state(context)))


def test_random_history_breaks_no_rule(pair_urls: PairURLs, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Three processes at random on one store pair: every read, query, merge and the end state agree
    with the replayed commits, and `dal check` finds nothing."""
    run_dir = tmp_path / "history"
    run_dir.mkdir()
    _announce(capsys, f"random history: DAL_HISTORY_SEED={SEED}, logs in {run_dir}")
    _run_workers(pair_urls, run_dir, SEED)
    replay = check_run(run_dir)
    failed = errors(replay)
    pair = "+".join(url.split(":", 1)[0] for url in (pair_urls.persistent, pair_urls.volatile))
    _announce(capsys, f"random history {pair} (seed {SEED}): {replay.summary()}; "
                      f"{sum(failed.values())} ops failed with {len(failed)} kinds of dal error")
    assert not replay.end["check"], f"seed {SEED}: dal check: {replay.end['check']}"
    assert not replay.problems, f"seed {SEED} (logs in {run_dir}):\n{replay.report()}"
    assert replay.merges and replay.reads and replay.queries, f"seed {SEED}: too little checked"


# --- the control: planted faults are reported -------------------------------------------------------


def _older_read(records: list[dict[str, Any]]) -> bool:
    """Make one load return an older revision (and its document) than a save completed before it."""
    saves = [r for r in records if r.get("ok") and r["op"] in ("create", "modify", "relink")]
    for r in records:
        if r["op"] == "load" and r.get("ok"):
            older = [s for s in saves
                     if s["guid"] == r["guid"] and s["rev"] < r["rev"] and s["end"] < r["start"]]
            if older:
                oldest = max(older, key=lambda s: s["rev"])
                r["rev"], r["doc"] = oldest["rev"], oldest["doc"]
                return True
    return False


def _dropped_query_guid(records: list[dict[str, Any]]) -> bool:
    """Drop one guid from a query's result."""
    for r in records:
        if r["op"] == "query" and r.get("ok") and r["result"]:
            r["result"] = r["result"][1:]
            return True
    return False


def _altered_merged_field(records: list[dict[str, Any]]) -> bool:
    """Store another value than a save set in one of its fields."""
    for r in records:
        if r["op"] == "modify" and r.get("ok") and r["rev"] != r["base_rev"] and "b" in r["changes"]:
            r["doc"]["b"] = r["changes"]["b"] + 100
            return True
    return False


PLANTED: list[tuple[Callable[[list[dict[str, Any]]], bool], str]] = [
    (_older_read, "STALE read: older than a write completed before the read began"),
    (_dropped_query_guid, "query result MISSING an item whose matching write completed before"),
    (_altered_merged_field, "merge result differs from the rule (lost update?)"),
]


@pytest.mark.parametrize(("plant", "reported"), PLANTED, ids=[plant.__name__[1:] for plant, _ in PLANTED])
def test_control_the_checker_reports_a_planted_fault(
        tmp_path: Path, namespace: str, capsys: pytest.CaptureFixture[str],
        plant: Callable[[list[dict[str, Any]]], bool], reported: str) -> None:
    """A history of one worker (in this process, on SQLite) checks clean; with the fault planted, the
    checker reports it."""
    run_dir = tmp_path / "history"
    run_dir.mkdir()
    url = f"sqlite:///{tmp_path / 'dal.sqlite3'}"
    with commit_spy():
        configure(url, "memory://", namespace=namespace)
        seed_objects(run_dir / "w0.jsonl")
        current().close()
        run(Plan(url, "memory://", namespace, 1, 30.0, 300, str(run_dir / "w1.jsonl"), SEED * 100 + 1))
        current().close()
    context = configure(url, "memory://", namespace=namespace)
    try:
        (run_dir / "end.json").write_text(json.dumps(end_state(context)))
    finally:
        context.close()
    records, end = load(run_dir)
    clean = check_history(records, end)
    assert not clean.problems, f"seed {SEED}: the unplanted history:\n{clean.report()}"
    corrupted = copy.deepcopy(records)
    assert plant(corrupted), f"seed {SEED}: no operation to plant {plant.__name__} in ({clean.summary()})"
    found = check_history(corrupted, end)
    _announce(capsys, f"control {plant.__name__[1:]} (seed {SEED}): {found.summary()}")
    assert reported in found.problems, f"seed {SEED}: {reported!r} not reported:\n{found.report()}"
