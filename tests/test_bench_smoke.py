"""``python -m bench`` runs and prints a well-formed table. Speed is not asserted here.

Speed targets belong to the benchmarks themselves (``python -m bench --check``); a test
suite that failed on a busy machine would only teach people to ignore it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyetcd
import pytest

from dal.backends.base import DeletePrefix, Put
from dal.config import Context, configure
from dal.testing.servers import RunningServer, ServerUnavailable, find_binary

ROOT = Path(__file__).resolve().parent.parent
HEADER = "| benchmark | dal ops/s | raw ops/s | ratio | target | met? |"
#: a ratio has 2 decimals, more where 2 would print it as its target (``bench.report.shown_ratio``)
ROW = re.compile(r"^\| (?P<name>[a-z0-9_]+) \| (?P<dal>[\d,]+) \| (?P<raw>[\d,]+) "
                 r"\| (?P<ratio>\d+\.\d{2,6})x \| >= (?P<target>\d+\.\d\d)x \| (?P<met>yes|no) \|$")


def bench_module(name: str) -> Any:
    """Import ``name`` from the ``bench`` package beside ``dal`` (not installed: only
    ``python -m pytest`` run from the root finds it on its own)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


def run_bench(*args: str, tmp_path: Path) -> tuple[dict[str, re.Match[str]], dict[str, Any]]:
    """Run ``python -m bench --quick`` with ``args``; return its table rows by name and its JSON."""
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(results), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    lines = completed.stdout.splitlines()
    assert HEADER in lines, completed.stdout
    start = lines.index(HEADER)
    assert lines[start + 1] == "|---|---:|---:|---:|---:|:---:|"
    rows: dict[str, re.Match[str]] = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        match = ROW.match(line)
        assert match is not None, f"malformed row: {line!r}"
        rows[match["name"]] = match
    return rows, json.loads(results.read_text())


def check_row(row: re.Match[str]) -> None:
    dal, raw = float(row["dal"].replace(",", "")), float(row["raw"].replace(",", ""))
    assert dal > 0 and raw > 0
    # the printed ratio is dal / raw of the printed (rounded) rates, within rounding
    assert float(row["ratio"]) == pytest.approx(dal / raw, abs=0.01 + 1 / min(dal, raw))


def test_sqlite_load_quick(tmp_path: Path) -> None:
    rows, document = run_bench("--only", "sqlite_load", tmp_path=tmp_path)
    assert list(rows) == ["sqlite_load"]
    check_row(rows["sqlite_load"])
    [result] = document["results"]
    assert result["name"] == "sqlite_load"
    assert len(result["dal_rates"]) == len(result["raw_rates"]) == document["settings"]["rounds"]


def need_servers() -> None:
    """Skip (or fail, under DAL_REQUIRE_SERVICES=1) unless etcd and memcached can be started."""
    try:
        find_binary("etcd", "DAL_ETCD_BIN", "etcd-server")
        find_binary("memcached", "DAL_MEMCACHED_BIN", "memcached")
    except ServerUnavailable as exc:
        if os.environ.get("DAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"etcd and memcached are required (DAL_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"etcd or memcached not available: {exc}")


def test_server_benchmarks_quick(tmp_path: Path) -> None:
    need_servers()
    names = ["cached_load", "etcd_load", "save_new"]
    rows, _ = run_bench("--only", ",".join(names), tmp_path=tmp_path)
    assert list(rows) == names
    for row in rows.values():
        check_row(row)


def test_delete_and_query_scan_20k_quick(tmp_path: Path) -> None:
    need_servers()
    rows, document = run_bench("--only", "delete,query_scan_20k", tmp_path=tmp_path)
    assert list(rows) == ["delete_sqlite", "delete_etcd", "query_scan_20k_sqlite"]
    for row in rows.values():
        check_row(row)
    notes = {result["name"]: result["notes"] for result in document["results"]}
    assert notes["delete_etcd"]["store_calls_per_delete"] == {
        "persistent.commit": 1, "volatile.delete_many": 1}
    assert notes["query_scan_20k_sqlite"]["query_misses"] > 0


def test_unknown_benchmark_is_a_usage_error() -> None:
    completed = subprocess.run([sys.executable, "-m", "bench", "--only", "nope"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2
    assert "unknown benchmark nope" in completed.stderr


def test_redis_side_by_side_quick() -> None:
    """``python -m bench.redis_side_by_side --quick`` starts its own redis-server and prints every
    side of every operation: a rate and a ratio, or (redis-om without its modules) why it fails."""
    try:
        find_binary("redis-server", "DAL_REDIS_BIN", "redis-server")
    except ServerUnavailable as exc:
        if os.environ.get("DAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"redis-server is required (DAL_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"redis-server not available: {exc}")
    completed = subprocess.run(
        [sys.executable, "-m", "bench.redis_side_by_side", "--quick", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    rows = [line.split(" | ") for line in completed.stdout.splitlines() if line.startswith("| ")][1:]
    operations = {row[0].lstrip("| ") for row in rows}
    assert operations == {"load", "save new", "update", "query equality", "query range"}
    for row in rows:
        rate = row[2]
        if rate.startswith("fails: "):
            assert row[1].startswith("redis-om"), f"only redis-om may fail on a plain redis-server: {row}"
        else:
            assert float(rate.replace(",", "")) > 0 and row[3].endswith("x"), row
    dal_rows = [row for row in rows if row[1].startswith("dal")]
    assert len(dal_rows) == 8 and all(not row[2].startswith("fails") for row in dal_rows)
    assert "Failures, verbatim:" in completed.stdout


SCALE_ROW = re.compile(r"^\| (?P<store>sqlite|etcd) \| (?P<size>[\d,]+) \| [\d,.]+ \| [\d,.]+ \| [\d,]+ "
                       r"(?:\| [\d,]+ \([\d,]+-[\d,]+\) \| \d+\.\d\dx ){3}\| [\d,]+ \| [\d,]+ \|$")


def test_scale_quick() -> None:
    """``python -m bench.scale --quick`` grows a SQLite store through two small sizes with dal's load
    path and prints, per size, build times, three operation costs with ratios, and memory."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick", "--sizes", "1000,2000", "--etcd-sizes", "",
         "--rounds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    lines = completed.stdout.splitlines()
    rows = [SCALE_ROW.match(line) for line in lines if line.startswith(("| sqlite", "| etcd"))]
    assert all(rows), completed.stdout
    assert [(row["store"], row["size"]) for row in rows if row] == [("sqlite", "1,000"), ("sqlite", "2,000")]
    assert lines.count("| store | objects | build: this step (s) | build: total (s) | commits | query (us) "
                       "| x first | cold load (us) | x first | warm load (us) | x first | RSS (MiB) "
                       "| peak RSS (MiB) |") == 1
    assert any(line.startswith("- sqlite: 2,000 vs 1,000 objects") for line in lines), completed.stdout


@pytest.mark.parametrize(("dal_rate", "target", "shown", "met"), [
    (799.6, 0.8, "0.7996x | >= 0.80x | no", False),
    (800.4, 0.8, "0.8004x | >= 0.80x | yes", True),
    (800.0, 0.8, "0.80x | >= 0.80x | yes", True),
    (923.4, 0.95, "0.92x | >= 0.95x | no", False),
])
def test_a_ratio_printed_at_its_target_shows_why_it_is_met_or_not(
        dal_rate: float, target: float, shown: str, met: bool) -> None:
    """``met`` compares the exact ratio, so a row never prints "0.80x | >= 0.80x | no": a ratio that two
    decimals would print as its target gets as many more as it takes to differ from it."""
    report, timing = bench_module("bench.report"), bench_module("bench.timing")
    result = report.Result("x", timing.Measurement(10, (dal_rate,), (1000.0,)), target)
    assert result.met is met
    assert result.row() == f"| x | {dal_rate:,.0f} | 1,000 | {shown} |"
    assert ROW.match(result.row()) is not None


def rewrite_schema_record(context: Context, hybrid: str) -> None:
    """Write ``hybrid``'s schema record again (a newer model recording its own), moving its revision."""
    key = context.keys.schema(hybrid)
    entry = context.persistent.get(key)
    assert context.persistent.commit([], [Put(key, entry.value if entry is not None else b"{}")]).ok


@pytest.fixture(params=["sqlite", "etcd"])
def bench_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Context, Any]]:
    """dal on SQLite + memory:// or on etcd + memory:// in a fresh namespace, with the raw delete of
    ``bench/benchmarks/delete.py`` on that store (made, with what closes it, by the second item);
    the namespace is removed after."""
    delete = bench_module("bench.benchmarks.delete")
    namespace = f"b{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        path = tmp_path / "delete.sqlite3"
        context = configure(f"sqlite:///{path}", "memory://", namespace=namespace)
        yield context, partial(delete.sqlite_delete, str(path), context)
    else:
        etcd: RunningServer = request.getfixturevalue("etcd_server")
        context = configure(etcd.url, f"memory://{namespace}", namespace=namespace)
        yield context, partial(delete.etcd_delete, etcd.host, etcd.port, context)
    context.persistent.commit([], [DeletePrefix(context.keys.root)])
    context.close()


def test_the_raw_delete_checks_the_schema_record_as_dal_does(bench_store: tuple[Context, Any]) -> None:
    """The raw side of ``delete`` is the transaction dal's delete commits, with its check of the hybrid's
    schema record (``dal/objects/views.py``): once another writer moves that record, the raw delete
    fails its checks and deletes nothing, as dal's commit would."""
    context, make = bench_store
    hybrids = bench_module("bench.hybrids")
    bench_module("dal.objects.schema").ensure_recorded(context, hybrids.BenchMachine._meta)
    raw, close = make()
    try:
        machines = []
        for number in range(2):
            machine = hybrids.BenchMachine(data=hybrids.machine_data(number, "raw"))
            machine.save()
            machines.append(machine)
        keys, hybrid = context.keys, hybrids.BenchMachine._meta.name
        raw(machines[0])  # the record as read: the checks hold
        assert context.persistent.get(keys.doc(hybrid, machines[0].guid)) is None
        rewrite_schema_record(context, hybrid)
        with pytest.raises(AssertionError, match="schema record of BenchMachine changed"):
            raw(machines[1])
        assert context.persistent.get(keys.doc(hybrid, machines[1].guid)) is not None
    finally:
        close()


@pytest.mark.etcd
def test_the_raw_saves_check_the_schema_record_as_dal_does(etcd_server: RunningServer) -> None:
    """The raw sides of ``save_new`` and ``save_child`` compare the schema record's mod revision as
    dal's create commits check it (``BenchVolume`` has no record: absent, revision 0)."""
    hybrids = bench_module("bench.hybrids")
    save_new = bench_module("bench.benchmarks.save_new")
    save_child = bench_module("bench.benchmarks.save_child")
    namespace = f"b{uuid.uuid4().hex[:12]}"
    context = configure(etcd_server.url, f"memory://{namespace}", namespace=namespace)
    raw = pyetcd.client(host=etcd_server.host, port=etcd_server.port, timeout=5)
    try:
        bench_module("dal.objects.schema").ensure_recorded(context, hybrids.BenchMachine._meta)
        pool = hybrids.BenchPool(data={"name": "pool-0001", "backend": "ceph", "capacity_gb": 1})
        pool.save()
        new, child = save_new.raw_saver(raw, context), save_child.raw_saver(raw, context, pool.guid)
        assert new(0) and child(0)  # the records as read: the compares hold
        for hybrid in (hybrids.BenchMachine, hybrids.BenchVolume):
            rewrite_schema_record(context, hybrid._meta.name)
        with pytest.raises(AssertionError, match="schema record changed"):
            new(1)
        with pytest.raises(AssertionError, match="schema record changed"):
            child(1)
    finally:
        raw.close()
        context.persistent.commit([], [DeletePrefix(context.keys.root)])
        context.close()
