"""Mirrored hybrids: objects kept in sync with a slow remote API, lazily and in bulk.

A hybrid declaring ``__mirror = Mirror(timeout, refresh_every=...)`` and a ``_refresh(self)``
loader stores, besides its properties, the remote's last answer (``info``), when it was
fetched (``cached_at``), the last refresh error (``error``) and ``ignore_cache``. Building,
listing, counting and querying its objects never call the remote; the first read of a stale
object refreshes it (with the stale ones loaded with it, in one ``_refresh_many`` call), once
across processes. The manual: docs/mirror.md.

Public here: :data:`clock` (every time the mirror reads), :func:`frozen`,
:func:`mirrored_hybrids`, :func:`refresh_stale`, :func:`stale_count` and :class:`RefreshReport`.
Importing this package installs its hooks in :mod:`dal.objects.mirrored` (``import dal`` does).
"""

from dal.mirror.bulk import RefreshReport, mirrored_hybrids, refresh_stale, stale_count
from dal.mirror.refresh import before_read, frozen, refresh_now
from dal.objects.mirrored import Clock, clock, provide

provide(before_read, refresh_now)

__all__ = ["Clock", "RefreshReport", "clock", "frozen", "mirrored_hybrids", "refresh_stale", "stale_count"]
