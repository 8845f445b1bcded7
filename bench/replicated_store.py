"""The replicated memcached store alone against one server: ``python -m bench.replicated_store``.

A measurement made while issue 14 is in progress (docs/caching.md, "Quorum reads"): three local
memcached servers, ``replicas=3``, ``get`` of one key and ``get_many`` of 50, alternating the two
stores over 5 rounds and printing each round and the median, in microseconds per call. No decoding
and no objects: the cached-load benchmark with ``replicas=3`` (the issue's target) replaces it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dal.backends import open_volatile
from dal.backends.memcached.replicated import ReplicatedCache
from dal.backends.url import parse_url
from dal.testing.servers import start_memcached

ROUNDS = 5


def per_call(call: Callable[[], object], times: int) -> float:
    """Return the mean time of ``call`` over ``times`` calls, in microseconds."""
    start = time.perf_counter()
    for _ in range(times):
        call()
    return (time.perf_counter() - start) / times * 1e6


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dal-replicated-"))
    servers = [start_memcached(work / f"m{n}") for n in range(3)]
    try:
        hosts = ",".join(server.url.split("://", 1)[1] for server in servers)
        replicated = ReplicatedCache.from_url(parse_url(f"memcached://{hosts}?replicas=3"))
        single = open_volatile(servers[0].url)
        keys = [f"k{n}" for n in range(50)]
        for store in (replicated, single):
            for key in keys:
                store.set(key, b"x" * 400, 60)
        rounds: dict[str, list[float]] = {"get, replicated": [], "get, one server": [],
                                          "get_many 50, replicated": [], "get_many 50, one server": []}
        for _ in range(ROUNDS):
            rounds["get, replicated"].append(per_call(lambda: replicated.get("k1"), 2000))
            rounds["get, one server"].append(per_call(lambda: single.get("k1"), 2000))
            rounds["get_many 50, replicated"].append(per_call(lambda: replicated.get_many(keys), 300))
            rounds["get_many 50, one server"].append(per_call(lambda: single.get_many(keys), 300))
        for name, figures in rounds.items():
            shown = ", ".join(f"{figure:.0f}" for figure in figures)
            print(f"{name}: median {statistics.median(figures):.0f} us (rounds {shown})")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
