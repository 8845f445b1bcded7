"""Settings a command refuses at once (exit 2, one ``error:`` line) instead of retrying or ignoring them.

``dal refresh`` in a loop waits for a durable store it cannot reach, but a store it reaches that
refuses the setting (a SQLite file that is no database, a Redis database number or password the
server refuses) is a ConfigurationError, as ``--once`` reports it: no retry mends it. ``dal migrate``
refuses a store that lives in its own process, as ``load`` and ``copy`` do; ``dal stats --count``
means something only with ``--demo``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from test_cli import run_dal

import dal
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.servers import RunningServer

#: seconds a refused loop may take to exit; a loop retrying it runs until killed past this
LOOP_EXIT = 30


def refresh_loop(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """Run `dal refresh` (no --once: the loop) on ``url``; fail, not hang, when it keeps running."""
    try:
        return run_dal_until(tmp_path, LOOP_EXIT, "refresh", "--persistent", url)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`dal refresh --persistent {url}` still ran after {LOOP_EXIT}s: it retries a refusal")


def run_dal_until(tmp_path: Path, timeout: float, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    return subprocess.run([sys.executable, "-m", "dal", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "retrying" not in result.stderr + result.stdout


def test_a_refresh_loop_exits_2_on_a_sqlite_file_that_is_no_database(tmp_path: Path) -> None:
    (tmp_path / "notes.sqlite3").write_text("hello, not a database\n")
    url = f"sqlite:///{tmp_path / 'notes.sqlite3'}"
    assert_refused(refresh_loop(tmp_path, url), "notes.sqlite3", "not a database", "name a SQLite database")
    once = run_dal("refresh", "--once", "--persistent", url, cwd=tmp_path)
    assert_refused(once, "notes.sqlite3", "not a database", "name a SQLite database")
    assert (tmp_path / "notes.sqlite3").read_text() == "hello, not a database\n"  # left as it was


def test_a_sqlite_file_that_is_no_database_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "notes.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigurationError, match="not a database") as caught:
        dal.configure(f"sqlite:///{tmp_path / 'notes.sqlite3'}", "memory://", namespace="refused")
    assert isinstance(caught.value, BackendError)  # what it was before: caught as one, it still is


@pytest.mark.redis
def test_a_refresh_loop_exits_2_on_a_redis_database_the_server_lacks(tmp_path: Path,
                                                                      redis_server: RunningServer) -> None:
    result = refresh_loop(tmp_path, f"{redis_server.url}/99")
    assert_refused(result, "no database 99", "name a database below it")
    assert "retrying is safe" not in result.stderr
    with pytest.raises(ConfigurationError, match="no database 99") as caught:
        dal.configure(f"{redis_server.url}/99", "memory://", namespace="refused")
    assert isinstance(caught.value, BackendError)


@pytest.mark.redis
def test_a_refresh_loop_exits_2_on_credentials_the_redis_server_refuses(tmp_path: Path,
                                                                        own_redis: RunningServer) -> None:
    redis.Redis(host=own_redis.host, port=own_redis.port).config_set("requirepass", "s3cret")
    wrong = own_redis.url.replace("redis://", "redis://:wrong@")
    for url in (wrong, own_redis.url):  # a wrong password, and none
        result = refresh_loop(tmp_path, url)
        assert_refused(result, "refuses the credentials", "give its password in the URL")
        assert "wrong" not in result.stderr  # the password is never printed


def test_migrate_refuses_a_store_that_lives_in_its_process_only(tmp_path: Path) -> None:
    """Its schema records would be gone when it exits, after it said it was done."""
    for store in ("memory://", "fakeredis://x"):
        result = run_dal("migrate", "--persistent", store, cwd=tmp_path)
        assert_refused(result, "lives in this process only", "`dal migrate`")
        assert "schema records" not in result.stdout
        moved = run_dal("migrate", cwd=tmp_path, env={"DAL_PERSISTENT_URL": store})
        assert_refused(moved, "lives in this process only")
    dry = run_dal("migrate", "--dry-run", "--persistent", "memory://", cwd=tmp_path)  # writes nothing
    assert dry.returncode == 0, dry.stderr


def test_stats_refuses_count_without_demo(tmp_path: Path) -> None:
    result = run_dal("stats", "--count", "5", "--persistent", "memory://", cwd=tmp_path)
    assert_refused(result, "--count 5", "--demo")
    assert result.stdout == ""


#: what an empty DAL_HYBRIDS is told, as an empty DAL_NAMESPACE is
FROM_NOTHING = "the list of hybrids modules is empty (from DAL_HYBRIDS, which is set to nothing)"


@pytest.mark.parametrize(("options", "env", "says"), [
    ([], {"DAL_HYBRIDS": ""}, FROM_NOTHING),
    ([], {"DAL_HYBRIDS": "  "}, FROM_NOTHING),
    (["--hybrids", ""], {}, "the list of hybrids modules is empty; give one, or leave it unset for 'dal."),
    (["--hybrids", " , "], {}, "the list of hybrids modules ' , ' names no module"),
])
def test_an_empty_hybrids_setting_is_refused_as_every_empty_dal_setting(
        tmp_path: Path, options: list[str], env: dict[str, str], says: str) -> None:
    """It meant "no modules": `dal check` then reported every key of the namespace as an orphan (exit 1)."""
    made = run_dal("migrate", "--persistent", "sqlite:///s.sqlite3", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    done = run_dal("check", "--persistent", "sqlite:///s.sqlite3", *options, cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {says}"), done.stderr
    assert done.stdout == ""
