"""Cache administration (``dal cache``): list, delete, prune, queue and prefetch, clean.

The operator's view of a namespace's entries in its volatile store, on ``memory://``, memcached
and Redis, modelled on Glance's image-cache driver::

    from dal.tools import cache

    cache.entries(context, kind="object", sort="hits", limit=10)   # what is cached, as the store says
    cache.delete(context, hybrid="backend")                        # an invalidation; returns the count
    cache.prune(context, max_size=10_000_000)                      # LRU order, never a lock
    cache.queue(context, "backend", "available", where={"status": "RUNNING"})
    cache.prefetch(context, workers=4)                             # under the dynamics' single flight
    cache.clean(context, stall_time=60)                            # stalled locks and leases
    cache.is_being_cached(obj, "available")

See docs/caching.md, "Cache administration".
"""

from dal.tools.cache.listing import KINDS, SORTS, Entry, classify, entries
from dal.tools.cache.queue import Prefetched, Queued, add, clear, prefetch, queue, queued, remove
from dal.tools.cache.removal import (
    Deleted,
    Pruned,
    clean,
    delete,
    delete_report,
    is_being_cached,
    is_cached,
    prune,
)

__all__ = ["KINDS", "SORTS", "Deleted", "Entry", "Prefetched", "Pruned", "Queued", "add", "classify", "clean",
           "clear", "delete", "delete_report", "entries", "is_being_cached", "is_cached", "prefetch", "prune",
           "queue", "queued", "remove"]
