"""The benchmarks, each in its own module, and the registry ``python -m bench`` runs them from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.benchmarks import (
    cached_dynamic,
    cached_dynamic_embedded,
    cached_load,
    cached_load_replicated,
    delete,
    etcd_load,
    locked_stampede,
    query_indexed,
    query_path,
    query_scan,
    query_scan_20k,
    reverse_list,
    save_child,
    save_new,
    sqlite_load,
)
from bench.env import Environment, Settings
from bench.report import Result


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its name, the servers it needs and the function that runs it.

    ``run`` returns one Result (one table row), or several when a benchmark measures more
    than one state (``reverse_list``: a cold and a warm object cache).
    """

    name: str
    servers: frozenset[str]
    run: Callable[[Environment, Settings], Result | Sequence[Result]]
    summary: str

    def results(self, env: Environment, settings: Settings) -> list[Result]:
        outcome = self.run(env, settings)
        return [outcome] if isinstance(outcome, Result) else list(outcome)


BENCHMARKS: dict[str, Benchmark] = {
    module.NAME: Benchmark(module.NAME, frozenset(module.SERVERS), module.run,
                           (module.__doc__ or "").strip().splitlines()[0])
    for module in (cached_load, cached_load_replicated, cached_dynamic, cached_dynamic_embedded, delete,
                   etcd_load, locked_stampede, query_indexed, query_path, query_scan, query_scan_20k,
                   reverse_list, save_child, save_new, sqlite_load)
}
