"""Worker processes of the Redis fault scenarios (tests/faults/test_redis_faults.py).

They live in their own module because ``multiprocessing``'s spawn start method makes each child
import the function it runs. The counting itself is the etcd scenario's
(:func:`faults.etcd_workers.count_worker`); this module only adds a flag the parent reads to kill
the server while a commit is in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dal.backends.base import Check, CommitResult, Op
from dal.backends.redis.store import RedisStore
from faults.etcd_workers import count_worker


def flagged_count_worker(in_commit: Any, index: int, *args: Any) -> None:
    """Run :func:`count_worker` with ``in_commit[index]`` set to 1 from just before each commit
    (a save's, or a fence) is sent until its answer is back; ``args`` are count_worker's after
    ``index``."""
    real = RedisStore.commit

    def commit(self: RedisStore, checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        in_commit[index] = 1
        try:
            return real(self, checks, ops)
        finally:
            in_commit[index] = 0

    RedisStore.commit = commit  # type: ignore[method-assign]
    count_worker(index, *args)
