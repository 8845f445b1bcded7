"""SQLite persistent store: one database file, WAL journal, shared safely by processes and threads.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with options
``timeout`` (seconds to wait for a lock, default 10), ``synchronous`` (``NORMAL``,
the default, or ``FULL``) and ``mode`` (``rwc``, the default: the file is created when
missing; ``rw``: it must exist already, as the commands that only read data ask). The
file's directory must exist: a mistyped path is refused rather than created.

:mod:`~dal.backends.sqlite.store` holds the store (reads, commits),
:mod:`~dal.backends.sqlite.tokens` its change tokens (read cheaply through
:mod:`~dal.backends.sqlite.watch`), and
:mod:`~dal.backends.sqlite.connections` its connections: each thread of each process gets its
own, because a sqlite3 connection must neither be shared between threads mid-transaction nor
carried across ``fork()``. A thread's connection is closed when the thread ends, so
short-lived threads do not pile up open files.
"""

from dal.backends.sqlite.store import SqliteStore, prefix_end
from dal.backends.tokens import OWN_LIMIT

__all__ = ["OWN_LIMIT", "SqliteStore", "prefix_end"]
