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
ROW = re.compile(r"^\| (?P<name>[a-z_]+) \| (?P<dal>[\d,]+) \| (?P<raw>[\d,]+) \| (?P<ratio>\d+\.\d\d)x "
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


def test_server_benchmarks_quick(tmp_path: Path) -> None:
    try:
        find_binary("etcd", "DAL_ETCD_BIN", "etcd-server")
        find_binary("memcached", "DAL_MEMCACHED_BIN", "memcached")
    except ServerUnavailable as exc:
        if os.environ.get("DAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"etcd and memcached are required (DAL_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"etcd or memcached not available: {exc}")
    names = ["cached_load", "etcd_load", "save_new"]
    rows, _ = run_bench("--only", ",".join(names), tmp_path=tmp_path)
    assert list(rows) == names
    for row in rows.values():
        check_row(row)


def test_unknown_benchmark_is_a_usage_error() -> None:
    completed = subprocess.run([sys.executable, "-m", "bench", "--only", "nope"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2
    assert "unknown benchmark nope" in completed.stderr
