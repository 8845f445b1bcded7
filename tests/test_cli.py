"""The ``dal`` command line, run as users run it: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def run_dal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "dal", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


def test_demo_on_the_embedded_default(tmp_path: Path) -> None:
    result = run_dal("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "persistent sqlite:///dal.sqlite3, volatile memory://" in out
    assert "2 backend types and 20 backends in 22 transactions" in out
    assert "1 cache miss, 1 cache hit" in out
    assert "status=RUNNING, tags=['gold']" in out
    assert "UniqueConstraintError: Backend.name" in out and "MissingMandatoryFieldsError" in out
    assert "available = True read 3 times: 2 computed (it reads its plugin's own dynamic), " \
           "2 from cache" in out
    assert "served by node1 (master), node2 through a junction; one-to-one plugin found" in out
    assert "LinkedObjectError: BackendType" in out
    assert "10 backends deleted, 10 left" in out
    assert (tmp_path / "dal.sqlite3").exists()
    again = run_dal("demo", cwd=tmp_path)
    assert again.returncode == 0 and "10 backends deleted, 10 left" in again.stdout


@pytest.mark.etcd
@pytest.mark.memcached
def test_demo_on_servers(tmp_path: Path, etcd_server: Any, memcached_server: Any) -> None:
    result = run_dal("demo", "--count", "4", "--persistent", etcd_server.url,
                     "--volatile", memcached_server.url, "--namespace", "clidemo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"persistent {etcd_server.url}" in result.stdout
    assert "2 backends deleted, 2 left" in result.stdout


def test_demo_never_clears_a_namespace_it_did_not_write(tmp_path: Path) -> None:
    setup = run_dal("demo", "--count", "2", "--namespace", "mine", cwd=tmp_path)
    assert setup.returncode == 0, setup.stderr
    import dal
    from dal.hybrids import BackendType

    dal.configure(f"sqlite:///{tmp_path}/dal.sqlite3", "memory://", namespace="precious")
    kept = BackendType(data={"name": "kept", "code": "kept"})
    kept.save()
    refused = run_dal("demo", cwd=tmp_path, env={"DAL_NAMESPACE": "precious"})
    assert refused.returncode == 2 and "holds data the demo did not write" in refused.stderr
    assert BackendType(kept.guid).name == "kept"
    again = run_dal("demo", "--count", "2", "--namespace", "mine", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_password_is_not_printed(tmp_path: Path) -> None:
    result = run_dal("demo", "--persistent", "etcd://bob:hunter22@127.0.0.1:1?bogus=1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "hunter22" not in result.stderr + result.stdout


@pytest.mark.parametrize("args", [["demo", "--persistent", "nosuch://x"],
                                  ["demo", "--hybrids", "no.such.module"],
                                  ["demo", "--count", "0"]])
def test_bad_input_exits_2_with_error_on_stderr(tmp_path: Path, args: list[str]) -> None:
    result = run_dal(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: "), result.stderr


def test_help_on_every_command(tmp_path: Path) -> None:
    top = run_dal("--help", cwd=tmp_path)
    assert top.returncode == 0 and "demo" in top.stdout
    demo = run_dal("demo", "--help", cwd=tmp_path)
    assert demo.returncode == 0 and "--persistent URL" in demo.stdout and "--hybrids" in demo.stdout


def test_dal_entry_point_is_the_same_program(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("dal")
    if not script.exists():
        pytest.skip("the dal console script is not installed beside this interpreter")
    result = subprocess.run([str(script), "demo", "--count", "2", "--persistent", "memory://"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "2 backend types and 2 backends" in result.stdout


def test_stats_after_the_demo_on_the_embedded_default(tmp_path: Path) -> None:
    result = run_dal("stats", "--demo", "--count", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "processes reporting: 1" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("backend.available"))
    hits, misses, computed, waits = (int(n) for n in row.split()[1:5])
    assert (hits, misses, computed, waits) == (2, 1, 1, 0)
    assert "memory cache of this process:" in out


@pytest.mark.etcd
@pytest.mark.memcached
def test_stats_sum_what_every_process_published(
        tmp_path: Path, etcd_server: Any, memcached_server: Any) -> None:
    namespace = f"stats{os.getpid()}"
    script = (
        "import dal, sys\n"
        "from dal.hybrids import Backend, BackendType\n"
        f"dal.configure({etcd_server.url!r}, {memcached_server.url!r}, namespace={namespace!r})\n"
        "t = BackendType(data={'name': 'T', 'code': 'c' + sys.argv[1]}); t.save()\n"
        "b = Backend(data={'name': 'b' + sys.argv[1], 'backend_type': t, 'status': 'RUNNING'}); b.save()\n"
        "assert [Backend(b.guid).available for _ in range(3)] == [True] * 3\n"
    )
    for worker in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script, worker], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    result = run_dal("stats", "--persistent", etcd_server.url, "--volatile", memcached_server.url,
                     "--namespace", namespace, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "processes reporting: 3" in result.stdout  # the two workers and `dal stats` itself
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("backend.available"))
    hits, misses, computed = (int(n) for n in row.split()[1:4])
    assert (hits, misses, computed) == (4, 2, 2)
