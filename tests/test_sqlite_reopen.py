"""``configure()`` opens the SQLite file its URL names now: not a deleted or replaced one this
process still holds, not the one a relative path named in another working directory; and it
refuses another application's database before changing a byte of it."""

from __future__ import annotations

import gc
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from query_hybrids import Item

from dal import configure
from dal.backends.base import Entry, Put, StoreReplacedError
from dal.config import current
from dal.exceptions import BackendError, ConfigurationError

T = TypeVar("T")


def save(url: str, key: str) -> None:
    """Configure ``url`` and commit one key through the context's store."""
    assert configure(url, namespace="reopen").persistent.commit([], [Put(key, b"v")]).ok


def remove_database(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        (path.parent / name).unlink(missing_ok=True)


def copy_database(source: Path, target: Path) -> None:
    """Copy a database file whole, as a backup tool does (SQLite's backup API)."""
    reading, writing = sqlite3.connect(source), sqlite3.connect(target)
    try:
        reading.backup(writing)
    finally:
        reading.close()
        writing.close()


def two_directories(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    return first, second


def keys_another_process_sees(path: Path) -> list[str] | None:
    """The keys a fresh process reads from the file at ``path``; None when there is no file."""
    script = ("import json, os, sqlite3, sys\n"
              "p = sys.argv[1]\n"
              "print(json.dumps(sorted(k for (k,) in sqlite3.connect(p).execute('SELECT key FROM kv')) "
              "if os.path.exists(p) else None))\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                         check=True, timeout=60)
    result: list[str] | None = json.loads(out.stdout)
    return result


def test_configure_after_the_file_was_deleted_writes_a_file_others_see(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    save(f"sqlite:///{path}", "first")
    remove_database(path)  # a test's teardown, an operator resetting the store
    save(f"sqlite:///{path}", "second")
    # it used to go on writing into the deleted file: the save "succeeded", and was lost
    assert keys_another_process_sees(path) == ["second"]


def test_configure_after_the_file_was_replaced_opens_the_new_file(tmp_path: Path) -> None:
    path, other = tmp_path / "app.db", tmp_path / "other.db"
    # a copy another process wrote and closed (its last connection checkpointed the -wal away)
    script = ("import sys; from dal.backends import open_persistent; from dal.backends.base import Put\n"
              "assert open_persistent('sqlite:///' + sys.argv[1]).commit([], [Put('restored', b'v')]).ok\n")
    subprocess.run([sys.executable, "-c", script, str(other)], check=True, timeout=60)
    save(f"sqlite:///{path}", "old")
    remove_database(path)
    os.rename(other, path)  # restored into place
    context = configure(f"sqlite:///{path}", namespace="reopen")
    assert context.persistent.get("restored") is not None and context.persistent.get("old") is None


def test_mode_rw_after_the_file_was_deleted_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    save(f"sqlite:///{path}", "first")
    save(f"sqlite:///{path}?mode=rw", "second")
    remove_database(path)
    with pytest.raises(ConfigurationError, match=r"does not exist .*mode=rw"):
        configure(f"sqlite:///{path}?mode=rw", namespace="reopen")
    assert not path.exists()


def test_a_relative_path_names_a_file_in_the_working_directory_of_each_configure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = two_directories(tmp_path)
    monkeypatch.chdir(first)
    save("sqlite:///dal.sqlite3", "in-a")
    monkeypatch.chdir(second)
    save("sqlite:///dal.sqlite3", "in-b")
    assert keys_another_process_sees(first / "dal.sqlite3") == ["in-a"]
    assert keys_another_process_sees(second / "dal.sqlite3") == ["in-b"]


def test_the_same_file_keeps_its_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = configure("sqlite:///app.db", namespace="reopen").persistent
    # the same file however the URL names it, and after a chdir back: one client, as before
    assert configure(f"sqlite:///{tmp_path / 'app.db'}", namespace="reopen").persistent is first
    monkeypatch.chdir("/")
    monkeypatch.chdir(tmp_path)
    assert configure("sqlite:///app.db", namespace="reopen").persistent is first


def test_a_context_still_holding_the_old_client_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    old = configure(f"sqlite:///{path}", namespace="reopen")
    assert old.persistent.commit([], [Put("k", b"old")]).ok
    remove_database(path)
    new = configure(f"sqlite:///{path}", namespace="reopen")
    assert new.persistent is not old.persistent
    # not closed under it: the old context reads what it wrote, into the file it holds
    assert old.persistent.get("k") == Entry(b"old", 1)
    assert new.persistent.get("k") is None


def test_a_new_thread_of_the_old_client_is_refused_not_given_the_new_file(tmp_path: Path) -> None:
    """A thread started after the file was replaced used to open the new file under the old client
    and its identity (cache keys): the client split across two files, others' caches left stale."""
    path, backup = tmp_path / "app.db", tmp_path / "backup.db"
    old = configure(f"sqlite:///{path}", namespace="reopen").persistent
    assert old.commit([], [Put("k", b"old")]).ok
    copy_database(path, backup)
    assert old.commit([], [Put("k", b"newer")]).ok
    remove_database(path)
    os.replace(backup, path)  # a backup restored in place
    failures: list[BaseException] = []

    def new_thread() -> None:
        try:
            old.commit([], [Put("from-new-thread", b"v")])
        except BackendError as exc:
            failures.append(exc)

    thread = threading.Thread(target=new_thread)
    thread.start()
    thread.join()
    assert len(failures) == 1 and isinstance(failures[0], StoreReplacedError), failures
    assert "replaced" in str(failures[0]) and "configure() again" in str(failures[0])
    assert keys_another_process_sees(path) == ["k"]  # nothing written into the restored file
    assert old.get("k") == Entry(b"newer", 2)  # the thread that had a connection keeps its file
    new = configure(f"sqlite:///{path}", namespace="reopen").persistent
    assert new is not old and new.identity() != old.identity() and new.get("k") == Entry(b"old", 1)


def test_the_old_files_wal_left_at_the_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    old = configure(f"sqlite:///{path}", namespace="reopen")
    assert old.persistent.commit([], [Put("k", b"v")]).ok
    path.unlink()  # the database alone: its -wal and -shm, which this process holds, stay
    # a new file there would share them with the old one, and read the old WAL as its own
    with pytest.raises(ConfigurationError, match=r"-wal and -shm .* still the old database's"):
        configure(f"sqlite:///{path}", namespace="reopen")
    remove_database(path)
    save(f"sqlite:///{path}", "fresh")
    assert keys_another_process_sees(path) == ["fresh"]


def make_database(path: Path, *statements: str) -> bytes:
    """Create a database (rollback journal) holding ``statements``' tables; return its bytes."""
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path.read_bytes()


def test_another_applications_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "other_app.db"
    before = make_database(path, "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)",
                           "INSERT INTO kv VALUES ('x', '1')")
    # it used to add dal's tables, switch the file to WAL, and fail at first use: no such column
    refused = re.escape(str(path)) + r" is not a dal database.*kv\(k, v\).*name another"
    with pytest.raises(ConfigurationError, match=refused):
        configure(f"sqlite:///{path}", namespace="reopen")
    assert path.read_bytes() == before  # journal mode included: the header says rollback
    assert sorted(os.listdir(tmp_path)) == ["other_app.db"]


def test_a_database_without_a_kv_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    before = make_database(path, "CREATE TABLE notes (body TEXT)")
    with pytest.raises(ConfigurationError, match=r"not a dal database.*notes\(body\)"):
        configure(f"sqlite:///{path}?mode=rw", namespace="reopen")
    assert path.read_bytes() == before


def test_an_empty_file_and_an_older_dal_file_open(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()  # what a process that died before preparing it leaves
    save(f"sqlite:///{empty}", "k")
    older = tmp_path / "older.db"  # as dal wrote it before the identity table
    make_database(older, "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                         "revision INTEGER NOT NULL) WITHOUT ROWID",
                  "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL)",
                  "INSERT INTO meta VALUES (0, 0)")
    save(f"sqlite:///{older}", "k")
    assert keys_another_process_sees(older) == ["k"]


def test_a_backup_restored_in_place_is_read_not_the_replaced_files_cached_objects(tmp_path: Path) -> None:
    """A restored copy carries the file's name (identity) too: it used to get the same cache root, so
    the process served the replaced file's cached objects while every other process read the backup."""
    path, backup = tmp_path / "app.db", tmp_path / "backup.db"
    url = f"sqlite:///{path}"
    context = configure(url, "memory://", namespace="reopen")
    item = Item(name="v1")
    item.save()
    copy_database(path, backup)
    item.name = "v2"
    item.save()
    assert Item(item.guid).name == "v2"  # cached
    before = context.keys.cache_root
    remove_database(path)
    os.replace(backup, path)
    restored = configure(url, "memory://", namespace="reopen")
    assert restored.keys.cache_root != before
    assert Item(item.guid).name == "v1"
    copy = tmp_path / "copy.db"
    copy_database(path, copy)  # a copy elsewhere is another store too
    assert configure(f"sqlite:///{copy}", "memory://", namespace="reopen").keys.cache_root not in (
        before, restored.keys.cache_root)


def test_a_child_forked_after_a_chdir_reopens_the_file_configure_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = two_directories(tmp_path)
    monkeypatch.chdir(first)
    context = configure("sqlite:///rel.db", "memory://", namespace="reopen")
    assert context.persistent.commit([], [Put("parent", b"v")]).ok
    monkeypatch.chdir(second)
    pid = os.fork()
    if pid == 0:  # the child: reopen (as any use after a fork does) and write
        code = 1
        try:
            child = current()
            child.reopen_if_forked()
            code = 0 if child.persistent.commit([], [Put("child", b"v")]).ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert keys_another_process_sees(first / "rel.db") == ["child", "parent"]
    assert not (second / "rel.db").exists()


def in_a_thread(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread of its own, which ends (its connection closed) before this returns."""
    results: list[T] = []
    thread = threading.Thread(target=lambda: results.append(work()))
    thread.start()
    thread.join()
    gc.collect()
    assert results, "the thread failed"
    return results[0]


def make_file_numbered(directory: Path, number: int, tries: int = 200) -> Path | None:
    """Create files in ``directory`` until one gets inode ``number``; return it (None after
    ``tries``), the others removed. ext4 gives a new file the lowest free number of its group,
    that of a file just deleted: so a freed number comes back within a few files."""
    made = [directory / f"spare-{index}" for index in range(tries)]
    found = None
    for candidate in made:
        candidate.touch()
        if candidate.stat().st_ino == number:
            found = candidate
            break
    for candidate in made:
        if candidate != found:
            candidate.unlink(missing_ok=True)
    return found


def test_a_backup_restored_while_no_thread_has_a_connection_is_another_store(tmp_path: Path) -> None:
    """With every thread's connection closed, nothing held the file: a backup restored there could
    get its inode number (ext4 reuses it at once), and configure() kept the old client and its cache
    keys, serving the replaced file's cached objects. The client now keeps its file in use."""
    probe = tmp_path / "probe"
    probe.touch()
    freed = probe.stat().st_ino
    probe.unlink()
    if make_file_numbered(tmp_path, freed) is None:
        pytest.skip("this filesystem gives no new file the number of one just deleted (ext4 does)")
    path, backup = tmp_path / "app.db", tmp_path / "backup.db"
    url = f"sqlite:///{path}"
    old = in_a_thread(lambda: configure(url, "memory://", namespace="reopen").persistent)

    def create() -> str:
        item = Item(name="v1")
        item.save()
        return str(item.guid)

    def rename() -> str:
        item = Item(guid)
        item.name = "v2"
        item.save()
        return str(Item(guid).name)

    guid = in_a_thread(create)
    copy_database(path, backup)
    assert in_a_thread(rename) == "v2"  # cached, and no thread has a connection now
    number = path.stat().st_ino
    remove_database(path)
    reused = make_file_numbered(tmp_path, number)  # the restore lands on the freed number if it can
    if reused is not None:
        reused.write_bytes(backup.read_bytes())
        backup = reused
    os.replace(backup, path)
    restored = in_a_thread(lambda: configure(url, "memory://", namespace="reopen").persistent)
    assert restored is not old and restored.identity() != old.identity()
    assert in_a_thread(lambda: Item(guid).name) == "v1"
    assert reused is None, "a new file got the number of the file the old client has open"
