"""SQLite persistent store: one database file, WAL journal, shared safely by processes and threads.

See :mod:`dal.backends.sqlite` for the URL and its options; the connections are
:class:`~dal.backends.sqlite.connections.SqliteConnections`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import ClassVar, TypeVar

from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    DeletePrefix,
    Entry,
    Leadership,
    Op,
    Put,
    evaluate_checks,
)
from dal.backends.leadership import acquired, lease_ttl, new_token, stamped, unstamped
from dal.backends.sqlite.connections import described
from dal.backends.sqlite.refusals import length_limit, refused, too_large
from dal.backends.sqlite.tokens import SqliteTokens
from dal.backends.url import StoreURL, plain_float
from dal.exceptions import BackendError, ConfigurationError
from dal.values import clipped_repr

T = TypeVar("T")

_IDENTITY = "SELECT name FROM identity WHERE id = 0"
_GET = "SELECT value, revision FROM kv WHERE key = ?"
_PUT = "INSERT OR REPLACE INTO kv (key, value, revision) VALUES (?, ?, ?)"
#: made by the first acquire_leadership, so a file nobody leads keeps the three tables it always had
_LEADERSHIP = ("CREATE TABLE IF NOT EXISTS leadership ("
               " role TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)")
#: SQLite's historical limit on bound variables per statement is 999; stay well below it
_CHUNK = 500
_SYNCHRONOUS = ("NORMAL", "FULL")
#: ``rwc`` creates a missing database file, ``rw`` refuses it (SQLite's URI open modes)
_MODES = ("rwc", "rw")
_URL_FORMS = "write sqlite:///relative/path.db or sqlite:////absolute/path.db"


def prefix_end(prefix: str) -> str | None:
    """Return the least string above every string starting with ``prefix``; ``None`` when unbounded.

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so
    ``prefix <= key < prefix_end(prefix)`` selects exactly the keys under ``prefix``
    while still using the primary-key index.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = last + 1
            if 0xD800 <= following <= 0xDFFF:
                following = 0xE000  # surrogates cannot occur in UTF-8 text, skip past them
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]  # nothing follows U+10FFFF: bound on the shorter prefix instead
    return None


def _prefix_clause(prefix: str) -> tuple[str, list[str]]:
    end = prefix_end(prefix)
    if end is None:
        return "key >= ?", [prefix]
    return "key >= ? AND key < ?", [prefix, end]


#: the longest busy timeout SQLite takes, in seconds: it counts milliseconds in a C int, and
#: Python's sqlite3 sets a longer one (an infinity too) to 0, which waits for no lock at all
MAX_TIMEOUT = (2**31 - 1) / 1000


def _timeout(text: str) -> float:
    value = plain_float(text)
    if not 0 <= value <= MAX_TIMEOUT:  # also rejects nan
        raise ValueError(f"must be a number of seconds from 0 to {MAX_TIMEOUT} (about 24 days)")
    return value


def _synchronous(text: str) -> str:
    value = text.upper()
    if value not in _SYNCHRONOUS:
        raise ValueError(f"must be one of {', '.join(_SYNCHRONOUS)}")
    return value


def _mode(text: str) -> str:
    value = text.lower()
    if value not in _MODES:
        raise ValueError("must be rwc (create the file when missing) or rw (open an existing file only)")
    return value


def _database_path(url: StoreURL) -> str:
    """Return the database path ``url`` names, as written; raise ConfigurationError when it names none."""
    if url.user is not None or url.password is not None:
        raise ConfigurationError(f"{url}: sqlite stores are local files and take no user, password or "
                                 f"host; {_URL_FORMS}")
    if url.hosts:
        raise ConfigurationError(f"{url} names a host, but sqlite stores are local files; {_URL_FORMS}")
    path = url.path[1:]
    if not path:
        raise ConfigurationError(f"{url} names no database file; {_URL_FORMS}")
    if path == ":memory:":
        raise ConfigurationError(
            f"{url}: an in-memory sqlite database would differ per thread; use memory:// instead")
    if "\x00" in path:
        # SQLite would open the file named by the path up to the NUL, and os calls refuse it
        raise ConfigurationError(f"sqlite database path {path!r} holds a NUL character (%00), which "
                                 "no file name can")
    try:
        os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate no file name's bytes decode to
        raise ConfigurationError(f"{url}: the database path is not a file name this system can "
                                 "encode") from None
    return path


class SqliteStore(SqliteTokens):
    """A PersistentStore in one SQLite file: a ``kv`` table plus a one-row ``meta`` revision counter."""

    scheme: ClassVar[str] = "sqlite"
    shared: ClassVar[bool] = True
    ambiguous_commits: ClassVar[bool] = False  # a local file: a failed commit is rolled back

    def __init__(self, url: StoreURL, path: str, *, timeout: float = 10.0,
                 synchronous: str = "NORMAL", mode: str = "rwc") -> None:
        self._identity: str | None = None
        super().__init__(url, path, timeout=timeout, synchronous=synchronous, mode=mode)

    @classmethod
    def located(cls, url: StoreURL) -> StoreURL:
        """Return ``url`` naming its file by absolute path, resolved in the working directory now.

        Clients are cached under it (:mod:`dal.backends`), so ``configure()`` after a ``chdir()``
        opens the file in the new directory, as a relative path says.
        """
        return replace(url, path="/" + os.path.abspath(_database_path(url)))

    @classmethod
    def from_url(cls, url: StoreURL) -> SqliteStore:
        """Open the database file the URL names, creating it (not its directory) unless ``mode=rw``."""
        url.check_options(("timeout", "synchronous", "mode"))
        # Resolve now, so a later chdir() or a child process started elsewhere opens the same file.
        return cls(url, os.path.abspath(_database_path(url)), timeout=url.option("timeout", _timeout, 10.0),
                   synchronous=url.option("synchronous", _synchronous, "NORMAL"),
                   mode=url.option("mode", _mode, "rwc"))

    def get(self, key: str) -> Entry | None:
        """Return the entry under ``key``, or ``None``."""
        local = self._local
        try:
            conn: sqlite3.Connection = local.conn if local.pid == os.getpid() else self._connect()
        except AttributeError:
            conn = self._connect()
        try:
            row = conn.execute(_GET, (key,)).fetchone()
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            failed = f"sqlite get of {clipped_repr(key)} from {self.path} failed"
            raise refused(exc, failed, conn) or BackendError(f"{failed}: {exc}") from exc
        return None if row is None else Entry(row[0], row[1])

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Return the present entries among ``keys``, all read from one snapshot."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        conn = self._conn()
        found: dict[str, Entry] = {}
        several = len(unique) > _CHUNK
        try:
            if several:
                conn.execute("BEGIN")  # one read transaction, so every chunk sees the same commit
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, value, revision in conn.execute(
                        f"SELECT key, value, revision FROM kv WHERE key IN ({marks})", chunk):
                    found[key] = Entry(value, revision)
            if several:
                conn.execute("COMMIT")
        except BaseException as exc:
            self._abandon(conn, exc, f"sqlite get_many of {len(unique)} keys from {self.path} failed")
        return found

    def scan(self, prefix: str, *, start_after: str | None = None,
             limit: int | None = None) -> list[tuple[str, Entry]]:
        """Return up to ``limit`` ``(key, entry)`` pairs under ``prefix``, in key order."""
        if limit is not None and limit <= 0:
            return []
        where, params = _prefix_clause(prefix)
        if start_after is not None:
            where += " AND key > ?"
            params.append(start_after)
        sql = f"SELECT key, value, revision FROM kv WHERE {where} ORDER BY key LIMIT ?"
        conn = self._conn()
        try:
            rows = conn.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            failed = f"sqlite scan of {clipped_repr(prefix)} in {self.path} failed"
            raise refused(exc, failed, conn) or BackendError(f"{failed}: {exc}") from exc
        return [(key, Entry(value, revision)) for key, value, revision in rows]

    def scan_keys(self, prefixes: Sequence[str]) -> dict[str, list[str]]:
        """Return, for each prefix, every key under it in key order, all read from one snapshot."""
        wanted = list(dict.fromkeys(prefixes))
        conn = self._conn()
        found: dict[str, list[str]] = {}
        several = len(wanted) > 1
        try:
            if several:
                conn.execute("BEGIN")  # one read transaction, so every prefix sees the same commit
            for prefix in wanted:
                where, params = _prefix_clause(prefix)
                found[prefix] = [key for (key,) in
                                 conn.execute(f"SELECT key FROM kv WHERE {where} ORDER BY key", params)]
            if several:
                conn.execute("COMMIT")
        except BaseException as exc:
            self._abandon(conn, exc, f"sqlite scan of {len(wanted)} prefixes in {self.path} failed")
        return found

    def commit(self, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        """Apply every op atomically if every check holds; otherwise apply nothing."""
        for op in ops:
            if isinstance(op, Put) and not isinstance(op.value, bytes):
                raise TypeError(f"Put({op.key!r}) value must be bytes, not {type(op.value).__name__}")
        conn = self._conn()
        try:
            # IMMEDIATE takes the write lock up front, so checks and writes see one state.
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BackendError(
                f"sqlite commit to {self.path} could not take the write lock within "
                f"{self.timeout}s: {described(exc, self.path)}") from exc
        try:
            failed, current = self._failed_checks(conn, checks)
            if failed:
                conn.execute("ROLLBACK")
                return CommitResult(ok=False, failed=failed, current=current)
            conn.execute("UPDATE meta SET revision = revision + 1 WHERE id = 0")
            revision: int = conn.execute("SELECT revision FROM meta WHERE id = 0").fetchone()[0]
            limit = length_limit(conn)
            for op in ops:
                if isinstance(op, Put):
                    if len(op.value) > limit:  # refused by name (2 GiB or more, sqlite3 would not even bind)
                        raise too_large(f"sqlite commit to {self.path} failed: the value of "
                                        f"{clipped_repr(op.key)} holds {len(op.value):,} bytes", limit)
                    conn.execute(_PUT, (op.key, op.value, revision))
                elif isinstance(op, Delete):
                    conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                elif isinstance(op, DeletePrefix):
                    where, params = _prefix_clause(op.prefix)
                    conn.execute(f"DELETE FROM kv WHERE {where}", params)
                else:
                    raise TypeError(f"unknown op {op!r}")
            conn.execute("COMMIT")
            self._changes.committed(revision)
        except BaseException as exc:
            self._abandon(conn, exc, f"sqlite commit to {self.path} failed")
        return CommitResult(ok=True, revision=revision)

    def identity(self) -> str:
        """Return the name written into the file when it was created, with the file's device and inode.

        The same through any path (a symlink; a file with several hard links is refused, see
        ``location``); another for a copy of the file, which carries the name too, and for a copy
        restored in its place: its cache entries and the revisions a process saw of it are another
        store's.
        """
        if self._identity is None:
            try:
                row = self._conn().execute(_IDENTITY).fetchone()
            except sqlite3.Error as exc:
                raise BackendError(f"sqlite could not read the identity of {self.path}: {exc}") from exc
            file = self._file
            if file is None:  # replaced while the first connection opened: named by the file there now
                try:
                    status = os.stat(self.path)
                except OSError as exc:
                    raise BackendError(f"sqlite could not read the identity of {self.path}: {exc}") from exc
                file = (status.st_dev, status.st_ino)
            self._identity = f"{row[0]}@{file[0]}:{file[1]}"
        return self._identity

    # --- leadership: an expiring record per role, in a table of its own -------------------
    # Expiry is on the wall clock (time.time()): the processes sharing one SQLite file share one
    # machine, hence one clock, and a record must outlive the process that wrote it. The owner
    # column holds the owner and the acquisition's token (leadership.stamped): the table an older
    # release made serves as it is, and its processes take a record stamped so for another owner's.

    def acquire_leadership(self, role: str, owner: str, ttl: float) -> Leadership:
        """Take ``role`` in one write transaction, only when its record is absent, expired or ``owner``'s
        (then its token is kept: the lease still holds)."""
        ttl = lease_ttl(role, owner, ttl)

        def take(conn: sqlite3.Connection) -> Leadership:
            now = time.time()
            row = conn.execute("SELECT owner, expires FROM leadership WHERE role = ?", (role,)).fetchone()
            token = new_token()
            if row is not None and row[1] > now:
                holder, token = unstamped(row[0])
                if holder != owner or not token:  # not token: an older release's process holds it
                    return Leadership(role, owner, ttl, acquired=False, holder=holder)
            conn.execute("INSERT OR REPLACE INTO leadership (role, owner, expires) VALUES (?, ?, ?)",
                         (role, stamped(owner, token), now + ttl))
            return Leadership(role, owner, ttl, acquired=True, holder=owner, handle=token)

        return self._leadership(f"acquire leadership of {role!r}", take)

    def renew_leadership(self, lease: Leadership) -> bool:
        """Push the record's expiry ``ttl`` seconds ahead, if it is still this lease's and unexpired."""
        if not acquired(lease):
            return False

        def renew(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = conn.execute(
                "UPDATE leadership SET expires = ? WHERE role = ? AND owner = ? AND expires > ?",
                (now + lease.ttl, lease.role, stamped(lease.owner, lease.handle), now))
            return cursor.rowcount == 1

        return self._leadership(f"renew leadership of {lease.role!r}", renew)

    def release_leadership(self, lease: Leadership) -> None:
        """Delete the record if it is this lease's (its owner's, with its token)."""
        if not acquired(lease):
            return
        held = stamped(lease.owner, lease.handle)
        self._leadership(f"release leadership of {lease.role!r}", lambda conn: conn.execute(
            "DELETE FROM leadership WHERE role = ? AND owner = ?", (lease.role, held)))

    def _leadership(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: read and write see one state
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite could not {what} in {self.path}: could not take the write lock "
                               f"within {self.timeout}s: {described(exc, self.path)}") from exc
        try:
            conn.execute(_LEADERSHIP)
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            self._abandon(conn, exc, f"sqlite could not {what} in {self.path}")
        return result

    @staticmethod
    def _failed_checks(conn: sqlite3.Connection,
                       checks: Sequence[Check]) -> tuple[tuple[int, ...], dict[str, Entry]]:
        def lookup(key: str) -> Entry | None:
            row = conn.execute(_GET, (key,)).fetchone()
            return None if row is None else Entry(row[0], row[1])

        def newest(prefix: str) -> int:
            where, params = _prefix_clause(prefix)
            row = conn.execute(f"SELECT max(revision) FROM kv WHERE {where}", params).fetchone()
            return int(row[0] or 0)

        return evaluate_checks(checks, lookup, newest)
