"""What a shared cache tells of its servers' outages (:class:`Outages`, a part of ``LeasedCache``).

One warning when a server stops taking invalidations, not one per save (a dead server fails every
save until it answers again), and one line when the outage is over: the server is trusted again and
no invalidation still waits for it, each failed one delivered since.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from dal.backends.base import VolatileStore
from dal.cache.trust import Placement, Trust, outage_lock

log = logging.getLogger("dal.cache")  # the logger the manual names, shared with dal.cache.leases


class Outages:
    """The outage reports of a ``LeasedCache``, which gives them its store, trust and placement."""

    store: VolatileStore
    trust: Trust
    placement: Placement

    def outage(self, by_node: dict[str, list[str]], first: bool) -> None:
        """Stop trusting the servers of ``by_node`` (each with the keys it did not confirm), and
        warn of each whose outage starts; ``first``: new invalidations, counted in its summary."""
        failed = {node: len(share) for node, share in by_node.items()}
        self.trust.fail(list(failed))
        with outage_lock:
            started = {node: count for node, count in failed.items() if node not in self.trust.outages}
            for node, count in failed.items():
                self.trust.outages[node] = self.trust.outages.get(node, 0) + (count if first else 0)
        for node, count in sorted(started.items()):
            log.warning("could not invalidate %d cache entries on %s; reading around it until they are "
                        "delivered (said once: a line follows when it answers again)", count,
                        self._server_name(node))

    def settle_outages(self, failing: Iterable[str] = ()) -> None:
        """Report each outage that is over: its server is trusted again and nothing waits for it.

        Trusted again means a sweep of the journal reached the server and delivered every
        recorded invalidation; the caches sharing the trust must also hold no unrecorded one
        still to be resent to it. ``failing``: keys whose invalidation just failed (not pending yet).
        """
        trust = self.trust
        with outage_lock:
            candidates = [node for node in trust.outages if node not in trust.lost]
        if not candidates:
            return
        holders = self.placement.holders
        waiting = {node for key in failing for node in holders(key)} | {
            node for cache in trust.caches for key in cache.pending for node in holders(key)}
        ended: list[tuple[str, int]] = []
        with outage_lock:
            for node in candidates:
                if node not in waiting and node not in trust.lost and node in trust.outages:
                    ended.append((node, trust.outages.pop(node)))
        for node, count in ended:
            log.warning("%s answers again; %d invalidations failed meanwhile, all delivered since",
                        self._server_name(node), count)

    def _server_name(self, node: str) -> str:
        """Return ``scheme://host:port`` of a server (``node`` is ``""`` when the store has one)."""
        url = self.store.url
        where = node or ",".join(host if port is None else f"{host}:{port}" for host, port in url.hosts)
        return f"{url.scheme}://{where}"
