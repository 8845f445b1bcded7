"""Worker processes of the Redis fault scenarios (tests/faults/test_redis_faults.py).

They live in their own module because ``multiprocessing``'s spawn start method makes each child
import the function it runs. The counting itself is the etcd scenario's
(:func:`faults.etcd_workers.count_worker`); this module only puts a proxy between one worker and the
durable store, which cuts the answer to a commit when the parent asks
(:class:`faults.etcd_workers.AnswerCutter`), so the parent kills the server while that answer is held.
"""

from __future__ import annotations

from typing import Any

from dal.backends.redis.store import RedisStore
from faults.etcd_workers import AnswerCutter, count_worker


def cutting_redis_worker(shared: Any, index: int, persistent: str, volatile: str, *args: Any) -> None:
    """Run :func:`count_worker` with its durable store (not its cache: a cache request would take the cut)
    reached through an :class:`AnswerCutter`'s proxy, which cuts the answer to the commit script's run
    (``EVALSHA``) when the parent asks; ``args`` are count_worker's after ``volatile``."""
    cutter = AnswerCutter(shared, persistent)
    cutter.watch_journal()
    real = RedisStore._script

    def script(store: RedisStore, what: str, run: Any, keys: int, *more: Any) -> Any:
        if run is store._commit:
            cutter.arm(lambda: None)
        return real(store, what, run, keys, *more)

    RedisStore._script = script  # type: ignore[method-assign]
    try:
        count_worker(index, cutter.spell(persistent), volatile, *args)
    finally:
        cutter.close()
