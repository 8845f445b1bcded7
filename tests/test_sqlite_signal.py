"""The cheap change signal of SQLite stores (the WAL-index header) never misses another process's commit.

``SqliteStore.change_token`` answers from the ``-shm`` header while it is unchanged since the
thread's last look (``dal/backends/sqlite/watch.py``); these tests prove that answer moves for
every commit of another process, including after the ``-shm`` file was replaced, and that a
closed store leaves no descriptor behind. Each control breaks the signal and sees the test fail.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dal.backends.base import Put
from dal.backends.sqlite import SqliteStore, watch
from dal.backends.url import parse_url

_COMMIT = ("import sqlite3, sys\n"
           "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
           "conn.execute('UPDATE meta SET revision = revision + 1 WHERE id = 0')\n"
           "conn.close()\n")


def open_store(path: Path) -> SqliteStore:
    return SqliteStore.from_url(parse_url(f"sqlite:///{path}"))


def commit_elsewhere(path: Path) -> None:
    """Commit once from another process, through a plain sqlite3 connection."""
    subprocess.run([sys.executable, "-c", _COMMIT, str(path)], check=True, timeout=60)


def watched(store: SqliteStore) -> int:
    """Look until this thread answers from the header; return the token."""
    for _ in range(3):
        token = store.change_token()
    assert getattr(store._local, "shm", None) is not None, "the header is not watched"
    return token


def descriptors_on(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
        except OSError:
            continue
    return count


def test_another_process_commit_moves_a_watched_token(tmp_path: Path) -> None:
    path = tmp_path / "dal.sqlite3"
    store = open_store(path)
    for round_ in range(5):
        token = watched(store)
        assert store.change_token() == token  # nothing committed: the header answers, unchanged
        commit_elsewhere(path)
        moved = store.change_token()
        assert moved != token, f"round {round_}: another process's commit was missed"


def test_control_a_header_read_that_never_changes_misses_the_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dal.sqlite3"
    store = open_store(path)
    token = watched(store)
    _, _, header, _ = store._local.shm
    monkeypatch.setattr(store._local, "shm", (watch.PID, header, header, float("inf")))
    commit_elsewhere(path)
    assert store.change_token() == token  # a blind signal serves the stale state: the test above can fail


def test_own_commits_of_other_threads_keep_a_watched_token(tmp_path: Path) -> None:
    store = open_store(tmp_path / "dal.sqlite3")
    token = watched(store)
    writers = [threading.Thread(target=lambda: store.commit([], [Put("k", b"1")])) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert store.change_token() == token
    assert watched(store) == token


@pytest.mark.parametrize("control", [False, True], ids=["checked", "control_unchecked"])
def test_a_replaced_shm_file_is_watched_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             control: bool) -> None:
    """When every connection closed, the last one deletes ``-shm``; a watch of the old file would
    never change again, so it is checked against the path before a look trusts it (the control
    skips that check and misses the commit)."""
    path = tmp_path / "dal.sqlite3"
    if control:
        monkeypatch.setattr(watch.ShmWatch, "live", lambda self: True)
    stores: list[SqliteStore] = []

    def first_thread() -> None:
        stores.append(open_store(path))
        watched(stores[0])

    thread = threading.Thread(target=first_thread)
    thread.start()
    thread.join()
    store = stores[0]
    gc.collect()
    assert not store._connections  # that thread's connection closed with it
    old = store._shm
    assert old is not None
    commit_elsewhere(path)  # the last connection to close deletes -wal and -shm
    commit_elsewhere(path)
    token = watched(store)  # this thread's connection holds the new -shm open from now on
    commit_elsewhere(path)
    if control:
        assert store._shm is old and store.change_token() == token
    else:
        assert store._shm is not old and store._shm is not None and store._shm.live()
        assert store.change_token() != token


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_closing_leaves_no_descriptor_unless_another_connection_holds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dal.sqlite3"
    first, second = open_store(path), open_store(path)
    watched(first)
    watched(second)
    shm = first._shm
    assert shm is not None
    first.close()  # second's connections hold locks on -shm: closing the watch would drop them
    assert shm in watch._kept and not shm.closed
    token = watched(second)
    commit_elsewhere(path)
    assert second.change_token() != token
    second.close()  # the last holder: both watches close now
    assert shm.closed and shm not in watch._kept
    assert descriptors_on(path) == 0
