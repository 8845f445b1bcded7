"""SQLite-only behaviour: URL forms, options, WAL, multi-process sharing, change tokens, errors."""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import sqlite3
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from dal.backends import open_persistent
from dal.backends.base import Entry, Put, Revision
from dal.backends.sqlite import SqliteStore, prefix_end
from dal.backends.url import parse_url
from dal.exceptions import BackendError, ConfigurationError


def open_store(url: str) -> SqliteStore:
    """Open a private client (not the registry's), as another connection would be."""
    return SqliteStore.from_url(parse_url(url))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'dal.sqlite3'}"


@pytest.fixture
def store(url: str) -> SqliteStore:
    return open_store(url)


# --- URLs and options -------------------------------------------------------------------


def test_relative_url_is_relative_to_the_working_directory(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "sub").mkdir(parents=True)  # dal never creates directories
    store = open_store("sqlite:///data/sub/rel.db")
    assert store.commit([], [Put("k", b"v")]).ok
    assert (tmp_path / "data" / "sub" / "rel.db").is_file()
    monkeypatch.chdir("/")  # the file was resolved when the store opened
    other = open_store(f"sqlite:///{tmp_path / 'data' / 'sub' / 'rel.db'}")
    assert other.get("k") is not None
    assert store.get("k") == other.get("k")


def test_absolute_url(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    url = f"sqlite:///{path}"
    assert url.startswith("sqlite:////")
    store = open_store(url)
    assert store.path == str(path)
    assert store.commit([], [Put("k", b"v")]).ok
    assert path.is_file()


@pytest.mark.parametrize("url", ["sqlite://localhost/x.db", "sqlite://", "sqlite:///", "sqlite://u@/x.db"])
def test_malformed_url_says_how_to_write_one(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///relative/path\.db or sqlite:////absolute/path\.db"):
        SqliteStore.from_url(parse_url(url))


def test_in_memory_database_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        SqliteStore.from_url(parse_url("sqlite:///:memory:"))


@pytest.mark.parametrize(("query", "named"), [
    ("timeout=soon", "timeout"), ("timeout=-1", "timeout"), ("timeout=nan", "timeout"),
    ("synchronous=OFF", "synchronous"), ("journal=wal", "known options: timeout, synchronous, mode"),
])
def test_bad_options_raise_configuration_error(tmp_path: Path, query: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        SqliteStore.from_url(parse_url(f"sqlite:///{tmp_path / 'x.db'}?{query}"))
    assert not (tmp_path / "x.db").exists()


def test_options_apply(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}?timeout=2.5&synchronous=full")
    assert store.timeout == 2.5 and store.synchronous == "FULL"
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    default = open_store(f"sqlite:///{tmp_path / 'y.db'}")
    assert default.timeout == 10.0
    assert default._conn().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_registry_serves_sqlite(url: str) -> None:
    store = open_persistent(url)
    assert isinstance(store, SqliteStore)
    assert store.shared is True and store.scheme == "sqlite"


# --- file format ------------------------------------------------------------------------


def test_wal_journal_and_schema(store: SqliteStore) -> None:
    raw = sqlite3.connect(store.path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = dict(raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        assert set(tables) == {"kv", "meta", "identity"}
        assert "WITHOUT ROWID" in tables["kv"]
        assert raw.execute("SELECT revision FROM meta").fetchall() == [(0,)]
        ((name,),) = raw.execute("SELECT name FROM identity").fetchall()
        status = os.stat(store.path)  # the name written at creation, and which file holds it
        assert store.identity() == f"{name}@{status.st_dev}:{status.st_ino}" and len(name) == 32
    finally:
        raw.close()
    revision = store.commit([], [Put("k", b"v")]).revision
    raw = sqlite3.connect(store.path)
    try:
        assert raw.execute("SELECT key, value, revision FROM kv").fetchall() == [("k", b"v", revision)]
        assert raw.execute("SELECT revision FROM meta").fetchall() == [(revision,)]
    finally:
        raw.close()


# --- prefix ranges ----------------------------------------------------------------------


def test_prefix_end() -> None:
    assert prefix_end("") is None
    assert prefix_end("a/") == "a0"
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff\U0010ffff") is None
    assert prefix_end("a\ud7ff") == "a\ue000"


def test_scan_at_code_point_edges(store: SqliteStore) -> None:
    keys = ["a\U0010ffff", "a\U0010ffffz", "a\ud7ff", "a\ud7ffz", "a\ue000", "b"]
    assert store.commit([], [Put(key, b"") for key in keys]).ok
    assert [key for key, _ in store.scan("a\U0010ffff")] == ["a\U0010ffff", "a\U0010ffffz"]
    assert [key for key, _ in store.scan("a\ud7ff")] == ["a\ud7ff", "a\ud7ffz"]
    assert [key for key, _ in store.scan("")] == sorted(keys)


def test_get_many_beyond_one_chunk(store: SqliteStore) -> None:
    keys = [f"k{i:04d}" for i in range(1200)]
    for start in range(0, 1200, 400):
        assert store.commit([], [Put(key, key.encode()) for key in keys[start:start + 400]]).ok
    found = store.get_many([*keys, "absent"])
    assert found.keys() == set(keys)
    assert all(entry.value == key.encode() for key, entry in found.items())


# --- change tokens ----------------------------------------------------------------------


def test_change_token_ignores_our_own_commits(store: SqliteStore) -> None:
    token = store.change_token()
    assert store.commit([], [Put("k", b"1")]).ok
    assert store.change_token() == token
    assert store.change_token() == token


def test_change_token_moves_after_another_connection_commits(store: SqliteStore, url: str) -> None:
    other = open_store(url)
    token = store.change_token()
    assert other.commit([], [Put("k", b"1")]).ok
    moved = store.change_token()
    assert moved != token
    assert store.change_token() == moved  # and stays put until the next foreign commit


def test_change_token_ignores_commits_of_our_other_threads(store: SqliteStore) -> None:
    """This process invalidates its own writes precisely, whichever thread made them."""
    token = store.change_token()
    writers = [threading.Thread(target=lambda: store.commit([], [Put("k", b"1")])) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert store.change_token() == token


def test_change_token_counts_foreign_commits_between_our_own(store: SqliteStore, url: str) -> None:
    other = open_store(url)
    token = store.change_token()
    assert store.commit([], [Put("a", b"1")]).ok
    assert other.commit([], [Put("b", b"1")]).ok  # one foreign commit hidden between two of ours
    assert store.commit([], [Put("c", b"1")]).ok
    assert store.change_token() != token


# --- several processes ------------------------------------------------------------------


def _echo(url: str, pipe: Connection) -> None:
    """Read ``ping`` whenever told to and copy it to ``pong``; report what was read."""
    store = open_persistent(url)
    while pipe.recv() is not None:
        entry = store.get("ping")
        result = store.commit([], [Put("pong", b"" if entry is None else entry.value)])
        pipe.send((None if entry is None else entry.value, result.revision))


def _count(url: str, increments: int) -> None:
    store = open_persistent(url)
    for _ in range(increments):
        while True:
            entry = store.get("counter")
            count, revision = (0, 0) if entry is None else (int(entry.value), entry.revision)
            if store.commit([Revision("counter", revision)], [Put("counter", str(count + 1).encode())]).ok:
                break


def test_two_processes_see_each_others_commits_at_once(store: SqliteStore, url: str) -> None:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_echo, args=(url, theirs))
    child.start()
    try:
        for round_ in range(20):
            value = f"round {round_}".encode()
            assert store.commit([], [Put("ping", value)]).ok
            token = store.change_token()
            ours.send(round_)
            assert ours.poll(60), "the child process did not answer"
            seen, revision = ours.recv()
            assert seen == value
            assert store.get("pong") == Entry(value, revision)
            assert store.change_token() != token
        ours.send(None)
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


@pytest.mark.slow
def test_processes_and_threads_lose_no_update(store: SqliteStore, url: str) -> None:
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_count, args=(url, 60)) for _ in range(3)]
    for child in children:
        child.start()
    threads = [threading.Thread(target=_count, args=(url, 60)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    entry = store.get("counter")
    assert entry is not None and int(entry.value) == 5 * 60


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_reopens_its_connection(store: SqliteStore) -> None:
    assert store.commit([], [Put("before", b"parent")]).ok
    context = multiprocessing.get_context("fork")
    child = context.Process(target=lambda: store.commit([], [Put("child", str(os.getpid()).encode())]))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    written = store.get("child")
    assert written is not None and written.value == str(child.pid).encode()
    assert store.get("before") is not None
    assert store.commit([], [Put("after", b"")]).revision > written.revision


# --- errors -----------------------------------------------------------------------------


def test_locked_database_beyond_timeout_is_a_backend_error(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}?timeout=0.2")
    assert store.commit([], [Put("k", b"v")]).ok
    raw = sqlite3.connect(store.path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendError, match="write lock") as caught:
            store.commit([], [Put("k", b"w")])
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert store.get("k") == Entry(b"v", 1)  # WAL: readers are not blocked by the writer
    finally:
        raw.execute("ROLLBACK")
        raw.close()
    assert store.commit([], [Put("k", b"w")]).ok


def test_driver_errors_are_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackendError, match=r"garbage\.db") as caught:
        open_store(f"sqlite:///{path}")
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


@pytest.mark.parametrize("mode", ["rwc", "rw"])
def test_a_url_naming_a_directory_is_refused_naming_a_file_to_use(tmp_path: Path, mode: str) -> None:
    # SQLite said only "unable to open database file"
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConfigurationError, match="adir is a directory, not a file; name a database "
                                                 "file") as caught:
        open_store(f"sqlite:///{tmp_path / 'adir'}?mode={mode}")
    assert f"sqlite:///{tmp_path / 'adir' / 'dal.sqlite3'}" in str(caught.value)
    assert os.listdir(tmp_path / "adir") == []


def test_missing_directory_is_refused_never_created(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist; create it") as caught:
        open_store(f"sqlite:///{tmp_path / 'no/such/dir/x.db'}")
    assert f"mkdir -p {tmp_path / 'no/such/dir'}" in str(caught.value)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("parent", ["file", "file/sub"])
def test_a_file_where_a_directory_of_the_path_should_be_is_named(tmp_path: Path, parent: str) -> None:
    # mkdir -p, which the message advised, fails there: the file is what is wrong
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match=f"{tmp_path / 'file'} is a file, not a directory; "
                                                 "correct the path") as caught:
        open_store(f"sqlite:///{tmp_path / parent / 'x.db'}")
    assert "mkdir" not in str(caught.value)
    assert (tmp_path / "file").read_text() == ""


def test_mode_rw_opens_only_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with pytest.raises(ConfigurationError, match=r"x\.db does not exist \(opened with mode=rw"):
        open_store(f"sqlite:///{path}?mode=rw")
    assert not path.exists()
    open_store(f"sqlite:///{path}").commit([], [Put("k", b"v")])  # the default mode creates it
    existing = open_store(f"sqlite:///{path}?mode=rw")
    assert existing.get("k") is not None and existing.commit([], [Put("k", b"w")]).ok


def test_mode_rw_never_creates_the_file_even_when_it_goes_away(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = open_store(f"sqlite:///{path}")
    store.commit([], [Put("k", b"v")])
    store.close()
    existing = open_store(f"sqlite:///{path}?mode=rw")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    failures: list[BaseException] = []

    def other_thread() -> None:
        try:
            existing.get("k")
        except BackendError as exc:
            failures.append(exc)

    thread = threading.Thread(target=other_thread)  # a new connection, opened with mode=rw
    thread.start()
    thread.join()
    assert failures and not path.exists()


def test_mode_option_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"must be rwc .* or rw"):
        open_store(f"sqlite:///{tmp_path / 'x.db'}?mode=ro")


def test_a_path_with_uri_characters(tmp_path: Path) -> None:
    path = tmp_path / "odd ?#%name.db"
    store = SqliteStore(parse_url("sqlite:///x"), str(path))
    assert store.commit([], [Put("k", b"v")]).ok
    assert path.is_file() and [p.name for p in tmp_path.iterdir() if p.suffix == ".db"] == [path.name]


def test_a_path_starting_with_two_slashes_opens_the_file_it_names(tmp_path: Path) -> None:
    # sqlite://///tmp/x.db names //tmp/x.db, which is /tmp/x.db: "file://tmp/..." read "tmp" as a host
    # ("invalid uri authority: tmp")
    path = tmp_path / "five.db"
    store = open_store(f"sqlite:///{'/' + str(path)}")
    assert store.path == "/" + str(path) and store.commit([], [Put("k", b"v")]).ok
    same = open_store(f"sqlite:///{path}")
    assert same.get("k") == Entry(b"v", 1) and same.identity() == store.identity()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["five.db", "five.db-shm", "five.db-wal"]


def test_a_file_with_two_hard_links_is_refused(tmp_path: Path) -> None:
    # SQLite names -wal and -shm after the path: processes opening the file through two links
    # would each have their own, never see each other's commits and lose writes
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    store = open_store(f"sqlite:///{first}")
    assert store.commit([], [Put("k", b"v")]).ok
    store.close()
    os.link(first, second)
    for path in (first, second):
        # the copy named is one a plain cp cannot make (onto a link: "are the same file")
        remedy = re.escape(f"sqlite3 {path} '.backup \"{path}.new\"' && mv {path}.new {path}")
        with pytest.raises(ConfigurationError, match=re.escape(f"{path} has 2 hard links") + ".*one name.*"
                           + "while no process has it open.*" + remedy):
            open_store(f"sqlite:///{path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db"]
    second.unlink()  # one name again: it opens, its data as it was
    assert open_store(f"sqlite:///{first}").get("k") == Entry(b"v", 1)
    (tmp_path / "link.db").symlink_to(first)  # a symlink is no second name: SQLite follows it
    assert open_store(f"sqlite:///{tmp_path / 'link.db'}").get("k") == Entry(b"v", 1)


def _in_a_child(work: Any) -> str:
    """Run ``work`` in a forked child; return what it raised (its type and message), or ''."""
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        failure = ""
        try:
            work()
        except BaseException as exc:
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(writing, failure.encode()[:4000])
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        failure = pipe.read().decode()
    os.waitpid(pid, 0)
    return failure


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_is_not_refused_a_link_made_since_its_parent_opened_the_file(tmp_path: Path) -> None:
    # the child reaches the file by its parent's path: a second name made since splits no one
    path, snapshot = tmp_path / "a.db", tmp_path / "snapshot.db"
    store = open_persistent(f"sqlite:///{path}")
    assert store.commit([], [Put("parent", b"v")]).ok
    os.link(path, snapshot)  # a snapshot by hard links (cp -al) while the process runs
    assert _in_a_child(lambda: store.commit([], [Put("inherited", b"v")])) == ""
    # after a fork a context opens a client of its own (Context.reopen_if_forked): not refused either
    assert _in_a_child(lambda: open_store(f"sqlite:///{path}").commit([], [Put("own", b"v")])) == ""
    assert store.get("inherited") is not None and store.get("own") is not None
    # a process that did not inherit the file is refused, as is the child through the other name
    assert "has 2 hard links" in _in_a_child(lambda: open_store(f"sqlite:///{snapshot}"))
    with pytest.raises(ConfigurationError, match="has 2 hard links"):
        open_store(f"sqlite:///{path}")


def _descriptors_of(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == os.path.realpath(path))


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/fd").is_dir(), reason="fork, /proc")
def test_a_child_closing_its_parents_client_closes_no_connection_it_inherited(tmp_path: Path) -> None:
    # the client keeps its file open (its pin) for its life; closing that, or a parent thread's
    # connection, in a child would drop the child's own POSIX locks on the file (a close drops all
    # of a process's locks on it). A client closed and dropped there used to close the latter.
    path = tmp_path / "a.db"
    store = open_store(f"sqlite:///{path}")
    assert store.commit([], [Put("k", b"v")]).ok and _descriptors_of(path) == 2  # its thread's, the pin

    def close_the_inherited_client() -> None:
        nonlocal store
        before = _descriptors_of(path)
        store.close()
        del store
        gc.collect()
        assert _descriptors_of(path) == before, "an inherited connection was closed in the child"

    assert _in_a_child(close_the_inherited_client) == ""
    store.close()
    assert _descriptors_of(path) == 0


def test_closed_store_raises_backend_error(store: SqliteStore) -> None:
    assert store.commit([], [Put("k", b"v")]).ok
    store.close()
    with pytest.raises(BackendError, match="closed"):
        store.get("k")
    with pytest.raises(BackendError, match="closed"):
        store.commit([], [Put("k", b"w")])


def test_non_bytes_value_is_refused_before_writing(store: SqliteStore) -> None:
    with pytest.raises(TypeError):
        store.commit([], [Put("a", b"ok"), Put("b", "text")])  # type: ignore[arg-type]
    assert store.get("a") is None


class _Interrupting:
    """A thread's connection whose ``nth`` statement starting with ``prefix`` raises KeyboardInterrupt
    (as a signal handler's exception would, between two statements of a read transaction)."""

    def __init__(self, conn: Any, prefix: str, nth: int) -> None:
        self.conn, self.prefix, self.left = conn, prefix, nth

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith(self.prefix):
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt()
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@pytest.mark.parametrize("read", ["get_many", "scan_keys"])
def test_a_read_transaction_interrupted_midway_is_rolled_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: str) -> None:
    """Left open, the thread's every later read (and its change token) came from the old snapshot,
    and its next commit waited out the lock timeout."""
    path = tmp_path / "interrupted.sqlite3"
    store, other = SqliteStore.from_url(parse_url(f"sqlite:///{path}")), \
        SqliteStore.from_url(parse_url(f"sqlite:///{path}"))
    keys = [f"a/{n:04d}" for n in range(1200)]  # three chunks of a get_many
    assert store.commit([], [Put(key, b"1") for key in keys[:100]] + [Put("b/k", b"1")]).ok
    token = store.change_token()
    conn = store._conn()
    if read == "get_many":
        monkeypatch.setattr(store, "_conn", lambda: _Interrupting(conn, "SELECT key, value", 2))
        with pytest.raises(KeyboardInterrupt):
            store.get_many(keys)
    else:
        monkeypatch.setattr(store, "_conn", lambda: _Interrupting(conn, "SELECT key FROM", 2))
        with pytest.raises(KeyboardInterrupt):
            store.scan_keys(["a/", "b/"])
    monkeypatch.undo()
    assert not conn.in_transaction
    assert other.commit([], [Put("b/k", b"2")]).ok
    entry = store.get("b/k")
    assert entry is not None and entry.value == b"2"
    assert store.change_token() != token
    assert store.commit([], [Put("b/k", b"3")]).ok
    store.close()
    other.close()
