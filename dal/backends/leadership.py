"""The checks every durable store makes of a leadership request, before it asks anything of its data.

:mod:`dal.backends.base` says what leadership is (:class:`~dal.backends.base.Leadership` and the
methods of a store); this module checks the arguments the same way for every store, so a badly
typed one raises :class:`~dal.exceptions.ConfigurationError` on each of them alike, never a
``TypeError`` of one driver, an ``AttributeError`` of another, or an owner stored as another type
that then no longer matches itself. A role or owner with a lone surrogate is an
:class:`~dal.exceptions.InvalidValueError`, as a key with one is on every store.

It also draws the token each acquisition gets (:attr:`Leadership.handle`, where the store has no
lease id of its own, as etcd has), and writes it beside the owner for the stores that keep the owner
as text (SQLite, Redis): renewing and releasing compare the token, not the owner alone, so a lease
that expired, then was taken again by the same owner, neither renews nor releases the newer one.
"""

from __future__ import annotations

import math
import secrets
from numbers import Real

from dal.backends.base import Leadership
from dal.exceptions import ConfigurationError, InvalidValueError

#: the longest role or owner, in UTF-8 bytes: a name, far under every store's limit on a key or a value
MAX_NAME_BYTES = 4096


def lease_ttl(role: str, owner: str, ttl: float) -> float:
    """Return ``ttl`` as a float once the request is checked, else raise ConfigurationError.

    ``role`` and ``owner`` are non-empty ``str`` of at most :data:`MAX_NAME_BYTES` (UTF-8 must encode
    them: a lone surrogate raises InvalidValueError, as in a key); ``ttl`` is a real number of seconds
    (an ``int`` or a ``float``, not a ``bool``), positive and finite.
    """
    for what, name in (("a role", role), ("an owner", owner)):
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"leadership needs {what} that is a non-empty str, not {name!r}")
        try:
            size = len(name.encode())
        except UnicodeEncodeError as exc:
            raise InvalidValueError(f"leadership needs {what} that UTF-8 can encode, not {name!r}: "
                                    f"remove its lone surrogate {name[exc.start]!r}") from None
        if size > MAX_NAME_BYTES:  # each store has a limit of its own, and its message fits data keys
            raise ConfigurationError(
                f"leadership needs {what} of at most {MAX_NAME_BYTES:,} bytes (UTF-8), not {size:,} "
                f"({name[:40]!r}...): a role names a job and an owner a process; use a shorter name")
    if isinstance(ttl, bool) or not isinstance(ttl, Real):
        raise ConfigurationError(f"a leadership lease lasts a number of seconds (an int or a float), "
                                 f"not {ttl!r} of type {type(ttl).__name__}")
    try:
        seconds = float(ttl)
    except OverflowError:  # an int beyond any float: past every finite number of seconds
        seconds = math.inf
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"a leadership lease lasts a positive, finite number of seconds, "
                                 f"not {ttl!r}")
    return seconds


def acquired(lease: Leadership) -> bool:
    """Return whether ``lease`` was acquired; raise ConfigurationError when it is no :class:`Leadership`.

    What ``renew_leadership`` and ``release_leadership`` ask first: a lease never acquired holds nothing.
    """
    if not isinstance(lease, Leadership):
        raise ConfigurationError(f"renew or release the Leadership that acquire_leadership returned, "
                                 f"not {lease!r} of type {type(lease).__name__}")
    return lease.acquired


#: the digits of a token as :func:`stamped` writes it (16 lowercase hex digits, after a NUL)
_TOKEN_DIGITS = 16
_HEX = frozenset("0123456789abcdef")


def new_token() -> int:
    """Return a fresh token for a lease just taken: random, positive (0 names no lease), below 2**63."""
    return secrets.randbits(63) or 1


def stamped(owner: str, token: int) -> str:
    """Return the text SQLite and Redis store for ``owner``'s lease ``token``: the owner, a NUL, the token.

    A store written by an older release holds the owner alone, which never equals this: its
    processes neither renew, release nor re-acquire a lease stamped so (they take it for another
    owner's), and a lease of theirs is another owner's here (:func:`unstamped` gives it token 0).
    """
    return f"{owner}\0{token:0{_TOKEN_DIGITS}x}"


def unstamped(stored: str) -> tuple[str, int]:
    """Return ``(owner, token)`` of what :func:`stamped` wrote; ``(stored, 0)`` for an older release's
    record, the owner alone (then it matches no lease of this release)."""
    owner, nul, digits = stored.rpartition("\0")
    if owner and nul and len(digits) == _TOKEN_DIGITS and _HEX.issuperset(digits):
        return owner, int(digits, 16)
    return stored, 0
