"""``python -m bench`` runs and prints a well-formed table. Speed is not asserted here.

Speed targets belong to the benchmarks themselves (``python -m bench --check``); a test
suite that failed on a busy machine would only teach people to ignore it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dal.testing.servers import ServerUnavailable, find_binary

ROOT = Path(__file__).resolve().parent.parent
HEADER = "| benchmark | dal ops/s | raw ops/s | ratio | target | met? |"
ROW = re.compile(r"^\| (?P<name>[a-z0-9_]+) \| (?P<dal>[\d,]+) \| (?P<raw>[\d,]+) \| (?P<ratio>\d+\.\d\d)x "
                 r"\| >= (?P<target>\d+\.\d\d)x \| (?P<met>yes|no) \|$")


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
