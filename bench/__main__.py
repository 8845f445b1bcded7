"""``python -m bench``: start throwaway servers, run the benchmarks, print a Markdown table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.benchmarks import BENCHMARKS
from bench.env import Settings, environment
from bench.report import Result, table, write_json
from bench.timing import progress
from dal.testing.servers import ServerUnavailable


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure dal against the raw clients it wraps, as ratios measured in the same run.",
        epilog="benchmarks: " + "; ".join(f"{b.name}: {b.summary}" for b in BENCHMARKS.values()))
    parser.add_argument("--quick", action="store_true",
                        help="run few operations per round (a smoke test; the numbers mean little)")
    parser.add_argument("--only", action="append", metavar="NAME", default=[],
                        help="run only this benchmark (repeat or separate names by commas)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating dal/raw rounds per benchmark; the medians are reported (default 5)")
    parser.add_argument("--profile", action="store_true",
                        help="after measuring, run one more dal batch under cProfile and print it on stderr")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a benchmark misses its target")
    args = parser.parse_args(argv)
    names = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.names = names or list(BENCHMARKS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(quick=args.quick, rounds=args.rounds, profile=args.profile)
    chosen = [BENCHMARKS[name] for name in args.names]
    servers = set().union(*(benchmark.servers for benchmark in chosen))
    results: list[Result] = []
    try:
        with environment(servers) as env:
            for benchmark in chosen:
                progress(f"running {benchmark.name}")
                results.extend(benchmark.results(env, settings))
    except ServerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode = "quick" if settings.quick else "full"
    print(f"dal vs raw clients, same run; median of {settings.rounds} interleaved rounds ({mode})\n")
    print(table(results))
    if args.json is not None:
        write_json(args.json, results, settings)
    missed = [result.name for result in results if not result.met]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
