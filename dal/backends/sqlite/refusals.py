"""The requests SQLite cannot take, whatever its state: typed as on every store, not as failures.

A key with a lone surrogate is an :class:`~dal.exceptions.InvalidValueError`; a key or value
past SQLite's length limit (``SQLITE_MAX_LENGTH``, 1,000,000,000 bytes by default) a
:class:`~dal.backends.base.TooLargeError`, which says nothing was written and that the same
request always fails (the mirror records it as the object's failure).
"""

from __future__ import annotations

import sqlite3

from dal.backends.base import TooLargeError
from dal.exceptions import InvalidValueError

#: SQLite's default length limit on a string or blob, and so on one row (SQLITE_MAX_LENGTH)
DEFAULT_LENGTH_LIMIT = 1_000_000_000


def length_limit(conn: sqlite3.Connection) -> int:
    """Return the most bytes ``conn`` takes in one string, blob or row (SQLite's length limit)."""
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11 and later
    return DEFAULT_LENGTH_LIMIT if getlimit is None else int(getlimit(sqlite3.SQLITE_LIMIT_LENGTH))


def too_large(what: str, limit: int) -> TooLargeError:
    """Return the error of a request holding more than SQLite takes: ``what`` was too large."""
    return TooLargeError(
        f"{what}: SQLite takes at most {limit:,} bytes in one entry, key and value together (its "
        f"length limit, SQLITE_MAX_LENGTH: {DEFAULT_LENGTH_LIMIT:,} bytes unless SQLite was built "
        "with another), so no such entry is ever stored; nothing was written: use a shorter key, "
        "or split the value over several keys")


def refused(exc: BaseException, failed: str, conn: sqlite3.Connection) -> Exception | None:
    """Return the typed error of a request SQLite cannot take, which fails alike every time, else None.

    A key with a lone surrogate, which UTF-8 cannot encode, is an InvalidValueError, as on every
    store (:func:`dal.backends.base.utf8`); a string or blob past SQLite's length limit
    (SQLITE_TOOBIG), or past the 2 GiB Python's sqlite3 binds at all, a TooLargeError.
    """
    if isinstance(exc, UnicodeEncodeError) and isinstance(exc.object, str):
        return InvalidValueError(f"{failed}: keys are UTF-8 text, and UTF-8 cannot encode the lone "
                                 f"surrogate {exc.object[exc.start:exc.end]!r} of {exc.object!r}")
    if isinstance(exc, OverflowError) and "longer than INT_MAX" in str(exc):
        return too_large(f"{failed}: a key or value of 2 GiB or more", length_limit(conn))
    if isinstance(exc, sqlite3.DataError):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.10 names none
        if code == 18 if code is not None else "too big" in str(exc):  # SQLITE_TOOBIG
            return too_large(f"{failed}: {exc}", length_limit(conn))
    return None
