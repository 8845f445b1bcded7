"""Opening a SQLite store: a new file several processes prepare at once, the timeout's range,
paths SQLite or the system cannot take as given, and a file this process cannot write."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dal.backends import open_persistent
from dal.backends.base import Entry, Put
from dal.backends.sqlite import SqliteStore
from dal.backends.sqlite.watch import ShmWatch
from dal.backends.url import parse_url
from dal.exceptions import BackendError, ConfigurationError


def open_store(url: str) -> SqliteStore:
    return SqliteStore.from_url(parse_url(url))


def rollback_mode_file_held(path: Path) -> sqlite3.Connection:
    """Make ``path`` a database still in rollback-journal mode, its write lock held by another
    connection: what a process opening a new file meets while another one sets it up."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # dal's own table: a file holding another application's tables is refused before any wait
    holder.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL) "
                   "WITHOUT ROWID")
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_opening_a_new_file_another_connection_holds_waits_for_it(tmp_path: Path) -> None:
    # SQLite refuses the switch to WAL at once, without the busy timeout, while another
    # connection holds the write lock: the open used to fail with "database is locked"
    path = tmp_path / "x.db"
    holder = rollback_mode_file_held(path)
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    try:
        started = time.monotonic()
        store = open_store(f"sqlite:///{path}?timeout=5")
        assert 0.2 < time.monotonic() - started < 4
        assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.commit([], [Put("k", b"v")]).ok and store.get("k") == Entry(b"v", 1)
    finally:
        release.join()
        holder.close()


def test_opening_a_file_held_beyond_the_timeout_fails_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = rollback_mode_file_held(path)
    try:
        started = time.monotonic()
        with pytest.raises(BackendError, match="database is locked"):
            open_store(f"sqlite:///{path}?timeout=0.3")
        assert 0.3 <= time.monotonic() - started < 3
    finally:
        holder.close()


@pytest.mark.parametrize("timeout", ["2147483.648", "3000000", "1e400", "inf"])
def test_a_timeout_sqlite_cannot_wait_is_refused(tmp_path: Path, timeout: str) -> None:
    # Python's sqlite3 sets a busy timeout past 2**31 - 1 ms to 0: no waiting at all
    with pytest.raises(ConfigurationError, match=r"option timeout=.*from 0 to 2147483\.647"):
        open_store(f"sqlite:///{tmp_path / 'x.db'}?timeout={timeout}")
    assert not (tmp_path / "x.db").exists()


def test_the_longest_timeout_is_the_busy_timeout_sqlite_keeps(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}?timeout=2147483.647")
    assert store._conn().execute("PRAGMA busy_timeout").fetchone()[0] == 2**31 - 1


def test_a_path_with_a_nul_is_refused(tmp_path: Path) -> None:
    # SQLite opened the file named by the path up to the NUL, and the change check's os.open raised
    with pytest.raises(ConfigurationError, match=r"NUL character \(%00\)"):
        open_store(f"sqlite:///{tmp_path}/data%00.old.db")
    assert list(tmp_path.iterdir()) == []
    assert ShmWatch.open(f"{tmp_path}/data\x00.db") is None


def test_a_path_that_is_not_utf8_names_its_file_byte_for_byte(tmp_path: Path) -> None:
    # a file name read from the system (os.fsdecode) holds surrogates for the bytes that are not
    # UTF-8: the registry's digest and the URI quoting used to raise UnicodeEncodeError
    name = os.fsdecode(b"lat\xe9.db")
    url = f"sqlite:///{tmp_path}/{name}"
    store = open_persistent(url)
    assert store.commit([], [Put("k", b"v")]).ok
    assert b"lat\xe9.db" in os.listdir(os.fsencode(tmp_path))
    assert open_persistent(url) is store
    assert open_store(url).get("k") == Entry(b"v", 1)


def test_a_path_no_file_name_can_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a file name this system can encode"):
        open_store(f"sqlite:///{tmp_path}/a\ud800.db")


def test_a_file_this_process_cannot_write_says_what_must_be_writable(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    open_store(f"sqlite:///{path}").close()
    with pytest.raises(BackendError, match=r"readonly database \(this process must be able to write "
                                           r"to .*x\.db and to its directory") as caught:
        SqliteStore(parse_url("sqlite:///x"), str(path), mode="ro")  # as a file without write permission
    assert "-wal and -shm" in str(caught.value)


def test_a_directory_this_process_cannot_write_says_so(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # root writes anywhere: run the open in a child without root's capabilities (util-linux's
    # setpriv), where the directory's permissions apply to it as to anyone else
    script = ("import sys\nfrom dal.backends.sqlite import SqliteStore\n"
              "from dal.backends.url import parse_url\nfrom dal.exceptions import BackendError\n"
              "try:\n    SqliteStore.from_url(parse_url(sys.argv[1]))\n"
              "except BackendError as exc:\n    print(exc)\nelse:\n    print('opened')\n")
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []
    try:
        done = subprocess.run([*drop, sys.executable, "-c", script, f"sqlite:///{locked / 'new.db'}"],
                              capture_output=True, text=True, timeout=60, check=True)
    finally:
        locked.chmod(0o755)
    assert "unable to open database file (this process must be able" in done.stdout, done.stdout + done.stderr
