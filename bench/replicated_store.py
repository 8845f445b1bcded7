"""The replicated memcached store alone against one server: ``python -m bench.replicated_store``.

A measurement made while issue 14 is in progress (docs/caching.md, "Quorum reads"): three local
memcached servers, ``replicas=3``, ``get`` of one key and ``get_many`` of 50, alternating the two
stores over 5 rounds and printing each round and the median, in microseconds per call. No decoding
and no objects: the cached-load benchmark with ``replicas=3`` (the issue's target) replaces it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dal.backends import open_volatile
from dal.backends.memcached.replicated import ReplicatedCache
from dal.backends.url import parse_url
from dal.testing.servers import RunningServer, start_memcached

ROUNDS = 5


def per_call(call: Callable[[], object], times: int) -> float:
    """Return the mean time of ``call`` over ``times`` calls, in microseconds."""
    start = time.perf_counter()
    for _ in range(times):
        call()
    return (time.perf_counter() - start) / times * 1e6


def measure(servers: Sequence[RunningServer]) -> None:
    """Time both stores over ``servers`` (the first one alone for the single store); print each figure."""
    hosts = ",".join(server.url.split("://", 1)[1] for server in servers)
    replicated = ReplicatedCache.from_url(parse_url(f"memcached://{hosts}?replicas=3"))
    single = open_volatile(servers[0].url)
    try:
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
        replicated.close()
        single.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Start three memcached servers in a temporary directory, measure, stop them and remove it."""
    argparse.ArgumentParser(prog="python -m bench.replicated_store",
                            description=(__doc__ or "").split("\n\n", 1)[0]).parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dal-replicated-") as work:
        servers: list[RunningServer] = []
        try:
            for number in range(3):
                servers.append(start_memcached(Path(work) / f"m{number}"))
            measure(servers)
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
