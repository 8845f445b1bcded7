"""Who holds a lock or a fill lease: its token names the process, so a dead owner can be told.

A token is random bytes (so no two callers' tokens are equal) followed by ``@<host>:<pid>``.
``dal cache clean`` (:mod:`dal.tools.cache`) removes a lock or lease only when its owner is
gone: on this host, when no process has that pid; an owner on another host cannot be looked
at from here, so there the age alone decides (and a token of an older dal, which names no one).
A pid reused by a new process keeps the lock until that process ends too: at worst a lock is
kept longer, never taken from a live owner on this host.
"""

from __future__ import annotations

import os
import socket

_SEPARATOR = b"@"


def token(prefix: bytes = b"") -> bytes:
    """Return ``prefix``, 8 random bytes and the name of this process (``@host:pid``)."""
    return prefix + os.urandom(8) + _SEPARATOR + f"{socket.gethostname()}:{os.getpid()}".encode()


def owner(payload: bytes) -> tuple[str, int] | None:
    """Return the (host, pid) a token names, or ``None`` when it names none."""
    _, separator, name = payload.rpartition(_SEPARATOR)
    host, colon, pid = name.decode("utf-8", "replace").rpartition(":")
    if not separator or not colon or not host or not pid.isdigit():
        return None
    return host, int(pid)


def gone(payload: bytes) -> bool | None:
    """Tell whether the owner a token names has ended: ``None`` when that cannot be known here."""
    named = owner(payload)
    if named is None or named[0] != socket.gethostname():
        return None
    try:
        os.kill(named[1], 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, as another user
    return False
