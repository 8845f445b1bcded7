"""The connections of a SQLite store: one per thread and process, safe across ``fork()``.

A sqlite3 connection must neither be shared between threads mid-transaction nor carried
across ``fork()``, so each thread of each process gets its own, and a thread's connection
is closed when the thread ends, so short-lived threads do not pile up open files. The first
connection of a process prepares the file (WAL journal, tables). One more connection, the pin,
opened with the first one and closed by ``close()``, keeps the file in use for the client's life:
with every thread's connection closed, a file restored at the path could otherwise get the old
one's inode number (ext4 reuses it at once), and pass for the file the client opened.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
import uuid
import weakref
from typing import NoReturn
from urllib.parse import quote

from dal.backends.base import StoreReplacedError
from dal.backends.sqlite.location import check_location
from dal.backends.sqlite.refusals import refused
from dal.backends.url import StoreURL
from dal.exceptions import BackendError, ConfigurationError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv ("
    " key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (id, revision) VALUES (0, 0)",
    # a name made once per file, so a file reached through two paths (a symlink) is one store
    "CREATE TABLE IF NOT EXISTS identity (id INTEGER PRIMARY KEY CHECK (id = 0), name TEXT NOT NULL)",
)
_NAME_FILE = "INSERT OR IGNORE INTO identity (id, name) VALUES (0, ?)"
#: the columns of each table dal makes, which a file dal prepared before holds (``identity`` came
#: later, and ``leadership`` comes with the first acquire_leadership: neither need be there)
_TABLES = {"kv": ["key", "value", "revision"], "meta": ["id", "revision"], "identity": ["id", "name"],
           "leadership": ["role", "owner", "expires"]}
#: first and longest pause (s) between two tries to prepare a file another connection holds
PREPARE_PAUSE = 0.002
PREPARE_PAUSE_LONGEST = 0.05

_stores: weakref.WeakSet[SqliteConnections] = weakref.WeakSet()
#: in a forked child, the connections it inherited (a parent thread's, a store's pin): never closed
#: there (see SqliteConnections._inherited), never used, and kept whatever becomes of their store
_orphans: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    # Another thread may have held a store's lock at fork() time; in the child it would stay held.
    for store in list(_stores):
        store._lock = threading.Lock()
        pin, store._pin = store._pin, None
        if pin is not None:  # it keeps the file in use in the child too, as long as it lives
            _orphans.append(pin)


os.register_at_fork(after_in_child=_after_fork_in_child)


class NotADatabaseError(ConfigurationError, BackendError):
    """The file a sqlite URL names is no SQLite database (SQLITE_NOTADB), found as this process first
    opens it (at ``configure()``): another program's file, or one whose header was overwritten. A
    setting to correct, which no retry mends (a ConfigurationError), found by the driver (a
    BackendError, its error the ``__cause__``)."""


def _not_a_database(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF == 26 if code is not None else "not a database" in str(exc)  # SQLITE_NOTADB


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Tell whether SQLite failed because another connection held a lock (SQLITE_BUSY, _LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # Python 3.10 names no code: "database is locked", "database table is locked"
        return "is locked" in str(exc)
    return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED, and their extended codes


def described(exc: sqlite3.Error, path: str) -> str:
    """Return SQLite's error message, with how to fix it when the file could not be written to."""
    code = getattr(exc, "sqlite_errorcode", None)
    readonly = code & 0xFF == 8 if code is not None else "readonly database" in str(exc)  # SQLITE_READONLY
    # SQLITE_CANTOPEN: no new file (nor its -wal or -shm) can be made in a directory not writable
    cannot_create = "unable to open" in str(exc) and not os.access(os.path.dirname(path), os.W_OK)
    if not readonly and not cannot_create:
        return str(exc)
    return (f"{exc} (this process must be able to write to {path} and to its directory, even only "
            "to read: dal prepares the file as it opens it, and SQLite's WAL journal creates the "
            "files -wal and -shm beside it)")


def _inode(path: str) -> tuple[int, int] | None:
    """Return the (st_dev, st_ino) of the file at ``path``; None when there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _inherited_file(path: str) -> bool:
    """Tell whether this process inherited over fork() an open client of the file at ``path``,
    opened through ``path`` by a parent process."""
    pid, file = os.getpid(), _inode(path)
    return any(store._opened_pid != pid and not store._closed and store.path == path
               and store._file == file for store in list(_stores))


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))]


class _ThreadMark:
    """Held by one thread's ``threading.local`` slot only: it dies when that thread ends, and its
    finalizer then closes the thread's connection."""

    __slots__ = ("__weakref__",)


def _release(store_ref: weakref.ref[SqliteConnections], token: int, conn: sqlite3.Connection,
             pid: int) -> None:
    """Close the connection of a thread that ended.

    Runs at any moment in whatever thread drops the last reference (the ending thread, or in a
    forked child, the one thread left), maybe while a store lock is held: so it takes none, and
    uses only atomic dict and list operations.
    """
    store = store_ref()
    listed = None if store is None else store._connections.pop(token, None)
    if pid == os.getpid():
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    elif store is None or listed is not None:  # else _connect() already moved it there
        # opened by the parent before a fork: closing it here could drop the child's own locks
        _orphans.append(conn)
        if store is not None:
            store._inherited.append(conn)


class SqliteConnections:
    """This process's and thread's connection to one SQLite file (see the module docstring)."""

    def __init__(self, url: StoreURL, path: str, *, timeout: float = 10.0,
                 synchronous: str = "NORMAL", mode: str = "rwc") -> None:
        self.url = url
        self.path = path
        self.timeout = timeout
        self.synchronous = synchronous
        self.mode = mode
        self._local = threading.local()
        self._lock = threading.Lock()
        #: token -> (pid, connection) of every open connection of a live thread
        self._connections: dict[int, tuple[int, sqlite3.Connection]] = {}
        self._tokens = itertools.count()
        # Connections inherited over fork(): closing them in the child could drop locks the
        # child itself holds (POSIX locks are per process), so they are kept, never used.
        self._inherited: list[sqlite3.Connection] = []
        self._ready_pid = 0
        #: the process that opened this client: in another one (a forked child) it was inherited
        self._opened_pid = os.getpid()
        #: holds the file open for the client's life (see the module docstring); None in a child
        self._pin: sqlite3.Connection | None = None
        #: (st_dev, st_ino) of the file the first connection opened; None when it was replaced meanwhile
        self._file: tuple[int, int] | None = None
        #: and of its -wal and -shm files, as that connection left them
        self._sides: tuple[tuple[int, int] | None, ...] = ()
        self._closed = False
        _stores.add(self)
        self._connect()

    def close(self) -> None:
        """Close every connection this process opened; later calls raise BackendError."""
        pid = os.getpid()
        with self._lock:
            self._closed = True
            self._local = threading.local()
            entries = list(self._connections.items())
            mine = [conn for _, (owner, conn) in entries if owner == pid]
            for token, (owner, _) in entries:
                if owner == pid:
                    self._connections.pop(token, None)
        pin, self._pin = self._pin, None  # a child's was moved to _orphans at the fork
        for conn in [*mine, *([] if pin is None else [pin])]:
            conn.close()

    def still_current(self) -> bool:
        """Tell whether the file now at the path is the one this store opened.

        False once closed, or once it was deleted or replaced (another file moved there, a restored copy): the
        connections would go on reading and writing the old file, which nobody else sees, so
        ``configure()`` opens the file there now instead (:mod:`dal.backends`).
        """
        if self._closed:
            return False  # closed by its owner: configure() opens the file anew
        if self._file is not None and _inode(self.path) == self._file:
            return True
        pid = os.getpid()
        with self._lock:
            holding = any(owner == pid for owner, _ in self._connections.values())
        # While a connection of ours is open, the old file's -wal and -shm are too (their inodes
        # cannot be reused): found at the path still, a new file opened there would share them
        # with the old one, and SQLite would read the old WAL into it.
        if holding and any(side is not None and _inode(self.path + suffix) == side
                           for suffix, side in zip(("-wal", "-shm"), self._sides, strict=False)):
            raise ConfigurationError(
                f"sqlite database {self.path} was deleted or replaced while this process has it open, "
                "but the -wal and -shm files beside it are still the old database's: a database "
                "opened there would share them and be corrupted; remove them too, or name another file")
        return False

    # --- internals --------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        try:
            if local.pid == os.getpid():
                conn: sqlite3.Connection = local.conn
                return conn
        except AttributeError:
            pass
        return self._connect()

    def _connect(self) -> sqlite3.Connection:
        """Open this thread's connection in this process, preparing the file on first use."""
        pid = os.getpid()
        with self._lock:
            if self._closed:
                raise BackendError(f"sqlite store {self.path} is closed")
            for token, (owner, conn) in list(self._connections.items()):
                if owner != pid:
                    self._inherited.append(conn)
                    _orphans.append(conn)
                    self._connections.pop(token, None)
            prepare, first = self._ready_pid != pid, self._ready_pid == 0
        if prepare:  # a file given a second name meanwhile is no split for a child: one path
            check_location(self.path, self.mode, one_name=first and not _inherited_file(self.path))
        before = _inode(self.path)
        if not first and before != self._file:
            self._replaced()  # a thread (or forked child) of this client would open another file
        conn = self._open(prepare)
        pin = self._open_pin() if first else None
        # the connection holds the file at the path, unless it was replaced while it opened (then
        # the two looks differ: the first connection's client is then not current, configure()
        # opens anew; a later connection of the client, into a file not the client's, is refused)
        after = _inode(self.path)
        if first:
            self._pin = pin
            self._file = after if before in (None, after) and pin is not None else None
        elif after != self._file:
            conn.close()
            self._replaced()
        if prepare:
            self._sides = (_inode(self.path + "-wal"), _inode(self.path + "-shm"))
        token = next(self._tokens)
        mark = _ThreadMark()
        # the finalizer holds the connection and a weak reference to the store, never the mark
        weakref.finalize(mark, _release, weakref.ref(self), token, conn, pid).atexit = False
        with self._lock:
            self._connections[token] = (pid, conn)
            self._ready_pid = pid
        local = self._local
        # the mark's only reference: when this thread ends, it goes, and closes the connection
        local.mark, local.conn, local.pid = mark, conn, pid
        return conn

    def _uri(self, mode: str) -> str:
        # a URI, so that mode=rw opens only an existing file, whoever deletes it meanwhile; quoted
        # from the path's bytes, so a name that is not UTF-8 (held with surrogates, as os.fsdecode
        # gives it) names its file byte for byte; an absolute path after "file://" (no host), so
        # that one starting with "//" is not read as a host name
        name = quote(os.fsencode(self.path))
        return f"file://{name}?mode={mode}" if name.startswith("/") else f"file:{name}?mode={mode}"

    def _open_pin(self) -> sqlite3.Connection | None:
        """Open the pin: a connection that never reads, so takes no lock, and holds the file open
        (SQLite opens it at once). Not a raw descriptor: closing one would drop every POSIX lock
        this process holds on the file, its connections' too; SQLite defers that close. None when
        the file went meanwhile (the client then passes for replaced)."""
        try:
            return sqlite3.connect(self._uri("ro"), uri=True, check_same_thread=False)
        except sqlite3.Error:
            return None

    def _open(self, prepare: bool) -> sqlite3.Connection:
        """Connect to the file at the path, preparing it when ``prepare``; SQLite's errors typed."""
        try:
            conn = sqlite3.connect(self._uri(self.mode), uri=True, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise BackendError(
                f"cannot open sqlite database {self.path}: {described(exc, self.path)}") from exc
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if prepare:
                self._prepare(conn)
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, sqlite3.Error):
                raise
            if prepare and _not_a_database(exc):
                raise NotADatabaseError(
                    f"cannot open sqlite database {self.path}: {exc}: it is some other file; name a "
                    "SQLite database, or a path where no file is yet (dal creates one there)") from exc
            raise BackendError(
                f"cannot prepare sqlite database {self.path}: {described(exc, self.path)}") from exc
        return conn

    def _replaced(self) -> NoReturn:
        raise StoreReplacedError(
            f"sqlite database {self.path} was deleted or replaced (a copy restored in its place, say) "
            "since this client opened it: a new thread's connection would open the file there now, "
            "splitting the client across two files under the old one's cache keys; call configure() "
            "again (or restart the process) to use the file there now")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL and create the tables, waiting up to the store's timeout.

        SQLite refuses a switch to WAL at once ("database is locked"), without the busy timeout,
        while another connection holds the write lock of a file still in rollback mode: as when
        processes open a new file at one moment. So a busy file is tried again, with short
        pauses, until the timeout has passed.
        """
        deadline = time.monotonic() + self.timeout
        pause = PREPARE_PAUSE
        while True:
            try:
                self._prepare_once(conn)
                return
            except sqlite3.OperationalError as exc:
                left = deadline - time.monotonic()
                if not _busy(exc) or left <= 0:
                    raise
            time.sleep(min(pause, left))
            pause = min(pause * 2, PREPARE_PAUSE_LONGEST)

    def _prepare_once(self, conn: sqlite3.Connection) -> None:
        self._refuse_foreign(conn)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":  # switched once per file: reading it takes no write lock
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL journal mode (got {mode!r})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(_NAME_FILE, (uuid.uuid4().hex,))
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        """Refuse a file holding tables, but not dal's ``kv`` table (another application's data):
        before anything is changed, so it stays byte for byte as it was, journal mode included."""
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
        if not tables:
            return  # a new file (or one emptied): dal prepares it
        odd = [name for name in tables if name in _TABLES and _columns(conn, name) != _TABLES[name]]
        if "kv" in tables and not odd:
            return
        found = ", ".join(f"{name}({', '.join(_columns(conn, name))})" for name in sorted(tables))
        raise ConfigurationError(
            f"{self.path} is not a dal database: it holds tables of its own ({found}), not dal's "
            f"kv(key, value, revision); name another file (dal never changes another application's)")

    def _abandon(self, conn: sqlite3.Connection, exc: BaseException, failed: str) -> NoReturn:
        """Roll back ``conn``'s transaction after ``exc`` and raise it again, a SQLite error as
        ``BackendError("<failed>: <error>")``, a request SQLite cannot take as :func:`refused`
        types it. Whatever the exception (a signal handler's, Ctrl-C included): a transaction left
        open would serve the thread's every later read from the old snapshot, or keep the write lock."""
        self._rollback(conn)
        typed = refused(exc, failed, conn)
        if typed is not None:
            raise typed from exc
        if isinstance(exc, sqlite3.Error):
            raise BackendError(f"{failed}: {described(exc, self.path)}") from exc
        raise exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # Suppressed: the error that brought us here is the one worth reporting.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

