"""What objects need of the mirror (:mod:`dal.mirror`): the clock, staleness, and the hooks it installs.

A read of a stale mirrored object must refresh it from the remote, which is the mirror's work, a
layer above the objects (it lists objects with the query engine, and writes them). The objects
reach it only through this narrow interface: the mirror hands over its two entry points when it
is imported (:func:`provide`), as the query engine hands its list maker to the reverse accessors
(``dal.model.reverse``). ``import dal`` imports the mirror, so no object is read before they are
known.

The clock lives here too, so that the staleness of an object (``obj.stale``) and every time the
mirror reads come from one place tests can replace: ``dal.mirror.clock`` is this object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dal.exceptions import ConfigurationError


class Clock:
    """Where mirrored objects read the time: ``now()`` gives seconds since the epoch."""

    def now(self) -> float:
        return time.time()


#: the one clock of the mirror; tests replace its ``now``:
#: ``monkeypatch.setattr(dal.mirror.clock, "now", fake)``
clock = Clock()

#: called on the first read of a stored mirrored object by an instance (``DataObject._before_read``)
Hook = Callable[[Any], None]
_before_read: Hook | None = None
_refresh_now: Hook | None = None


def provide(before_read: Hook, refresh_now: Hook) -> None:
    """Install the mirror's entry points (:mod:`dal.mirror` calls this when it is imported)."""
    global _before_read, _refresh_now
    _before_read, _refresh_now = before_read, refresh_now


def before_read(obj: Any) -> None:
    """Let a stale mirrored object (and the stale ones loaded with it) refresh before it is read."""
    if _before_read is None:
        raise ConfigurationError("mirrored hybrids refresh through dal.mirror: import dal")
    _before_read(obj)


def refresh_now(obj: Any) -> None:
    """Refresh a mirrored object from its remote now, whether stale or not; raise MirrorError on failure."""
    if _refresh_now is None:
        raise ConfigurationError("mirrored hybrids refresh through dal.mirror: import dal")
    _refresh_now(obj)
